from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from jobs.kinds.registry import all_kinds
from jobs.permissions import Power, has_power


@login_required
def operations(request: HttpRequest) -> HttpResponse:
    """The operator's live view (the "use the operator view" power); the data comes over the
    socket (ops.subscribe), which checks the same power, and the charts and failure groups from
    GET /api/v1/ops/history/ (dashboard.history), polled by the page; tracebacks there only for
    the "see all results" power."""
    if not has_power(request.user, Power.USE_OPERATOR_VIEW):
        raise PermissionDenied("The operator view takes the 'use the operator view' permission.")
    context = {
        "may_control": has_power(request.user, Power.CONTROL_QUEUES),
        "may_see_tracebacks": has_power(request.user, Power.VIEW_ALL_RESULTS),
        "kinds": sorted(all_kinds(), key=lambda kind: kind.title),
    }
    return render(request, "frontend/operations.html", context)
