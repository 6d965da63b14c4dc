from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def diagnostics(request: HttpRequest) -> HttpResponse:
    """Connection diagnostics: which transport works and the WebSocket round-trip time."""
    return render(request, "frontend/diagnostics.html")
