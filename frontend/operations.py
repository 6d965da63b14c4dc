from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@staff_member_required
def operations(request: HttpRequest) -> HttpResponse:
    """The operator's live view (staff only); the data comes over the socket (ops.subscribe)."""
    return render(request, "frontend/operations.html")
