from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from jobs import selectors
from jobs.conf import app_settings
from jobs.kinds.registry import UnknownKind, all_kinds, get_kind
from jobs.models import Job, JobState
from jobs.permissions import signed_in_user
from jobs.tokens import token_create, token_list, token_revoke
from notifications.inbox import preference_get, preference_update

from .forms import form_fields


@login_required
@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    launchable = all_kinds(user=request.user)
    # Open on the everyday kind (a newcomer's first launch), not the first by title: for staff
    # that was the broadcast form, which sends to every user.
    names = [kind.name for kind in launchable]
    wanted = app_settings.LAUNCH_PANEL_KIND
    opened = wanted if wanted in names else next(iter(names), None)
    kinds = [{"kind": kind, "fields": form_fields(kind), "open": kind.name == opened} for kind in launchable]
    return render(request, "frontend/home.html", {"kinds": kinds, "states": JobState.values})


@login_required
@ensure_csrf_cookie
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    user = signed_in_user(request)
    try:
        job = selectors.job_get_for_user(user=user, job_id=job_id)
    except Job.DoesNotExist:
        raise Http404("No such job.") from None
    try:
        kind = get_kind(job.kind)
        fields = form_fields(kind, values=job.params)
    except UnknownKind:
        kind, fields = None, []
    return render(
        request,
        "frontend/job_detail.html",
        {"job": job, "kind": kind, "fields": fields, "payload": selectors.job_payload_for(job, user)},
    )


PREFERENCE_FIELDS = [
    ("job_succeeded", "A job of mine finishes"),
    ("job_failed", "A job of mine fails"),
    ("job_cancelled", "A job of mine is cancelled"),
    ("job_attempt_failed", "An attempt of a job of mine fails and will be retried"),
    ("announcements", "Announcements"),
    ("toast", "Show a toast in open tabs"),
    ("browser_push", "Browser notifications when no tab is open"),
]


@login_required
@ensure_csrf_cookie
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    new_token = None
    if request.method == "POST":
        if request.POST.get("form") == "preferences":
            # An unticked checkbox is simply absent from the form.
            preference_update(
                user_id=user.pk, **{name: name in request.POST for name, _ in PREFERENCE_FIELDS}
            )
            messages.info(request, "Notification preferences saved.")
            return redirect("frontend:settings")
        if "revoke" in request.POST:
            try:
                revoked = token_revoke(user=user, token_id=int(request.POST["revoke"]))
            except ValueError:
                revoked = False
            messages.info(request, "Token revoked." if revoked else "No such token.")
            return redirect("frontend:settings")
        name = request.POST.get("name", "").strip()
        if not name:
            messages.error(request, "Give the token a name, so you know later what uses it.")
            return redirect("frontend:settings")
        _, new_token = token_create(user=user, name=name)
    preference = preference_get(user_id=user.pk)
    return render(
        request,
        "frontend/settings.html",
        {
            "tokens": token_list(user=user),
            "new_token": new_token,
            "preferences": [
                {"name": name, "label": label, "checked": getattr(preference, name)}
                for name, label in PREFERENCE_FIELDS
            ],
        },
    )
