"""Bulk actions on jobs selected by a filter (issue 16 §12): owned by the bulk-actions work."""

from django.http import Http404, HttpRequest, HttpResponse


def bulk_page(request: HttpRequest) -> HttpResponse:
    raise Http404("Not built yet.")
