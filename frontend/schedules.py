"""The operator's schedules: each with its next run, last run and outcome; Run now, pause, resume."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from jobs import schedules
from jobs.exceptions import RateLimited
from jobs.models import JobSchedule
from jobs.permissions import Power, has_power, signed_in_user

ACTIONS = ("run", "pause", "resume")


@login_required
@require_http_methods(["GET", "POST"])
def schedules_page(request: HttpRequest) -> HttpResponse:
    """Seeing schedules takes the operator view; acting on one takes 'act on any job' (or being
    its owner). POSTs are CSRF-checked by the middleware like every form."""
    user = signed_in_user(request)
    if not has_power(user, Power.USE_OPERATOR_VIEW):
        raise PermissionDenied("Schedules take the 'use the operator view' permission.")
    if request.method == "POST":
        action = request.POST.get("action", "")
        raw = request.POST.get("schedule", "")
        valid = raw.isascii() and raw.isdigit() and len(raw) < 19  # a bigint; ASCII: "²".isdigit()
        schedule = JobSchedule.objects.filter(pk=int(raw)).first() if valid else None
        if action not in ACTIONS or schedule is None:
            messages.error(request, "No such schedule or action.")
            return redirect("frontend:schedules")
        if schedule.owner_id != user.pk and not has_power(user, Power.ACT_ON_ANY_JOB):
            raise PermissionDenied("Acting on another user's schedule takes the 'act on any job' permission.")
        if action == "run":
            try:
                job = schedules.schedule_run(schedule_id=schedule.pk, manual=True)
            except RateLimited as exc:
                messages.error(request, f"{schedule.name}: {exc}")
                return redirect("frontend:schedules")
            if job is None:
                messages.error(request, f"{schedule.name}: its owner is inactive; nothing was run.")
            else:
                messages.info(request, f"{schedule.name}: started job {str(job.id)[:8]}.")
        else:
            schedules.schedule_set_enabled(schedule_id=schedule.pk, enabled=action == "resume")
            messages.info(request, f"{schedule.name}: {'resumed' if action == 'resume' else 'paused'}.")
        return redirect("frontend:schedules")
    return render(
        request,
        "frontend/schedules.html",
        {"statuses": schedules.schedules_status(), "may_act_on_any": has_power(user, Power.ACT_ON_ANY_JOB)},
    )
