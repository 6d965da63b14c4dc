"""Operators' alert subscriptions (issue 16 §14): owned by the alerts work."""

from django.http import Http404, HttpRequest, HttpResponse


def alerts_page(request: HttpRequest) -> HttpResponse:
    raise Http404("Not built yet.")
