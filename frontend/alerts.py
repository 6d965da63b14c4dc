"""Operators' alert subscriptions (issue 16 §14; docs/alerts.md): their rules with each one's
state, a form to add a failure-rate or a queue-wait alert, and a button to delete one."""

import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dashboard import alerts
from dashboard.ops import queue_names
from jobs.kinds.registry import all_kinds
from jobs.permissions import Power, has_power, signed_in_user
from notifications.models import AlertRule

ADD, DELETE = "add", "delete"


def _number(raw: str) -> float | None:
    """A finite number typed in a form field, else None."""
    try:
        value = float(raw.strip()) if raw.strip().isascii() else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole(raw: str) -> int | None:
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None


def _add(request: HttpRequest) -> str:
    """Create the rule the form asks for; raises AlertRuleInvalid with what is wrong."""
    post = request.POST
    metric = post.get("metric", "")
    threshold = _number(post.get("threshold", ""))
    if threshold is None:
        raise alerts.AlertRuleInvalid("The threshold must be a number.")
    if metric == AlertRule.Metric.FAILURE_RATE:
        window, min_jobs = _whole(post.get("window_minutes", "10")), _whole(post.get("min_jobs", "5"))
        if window is None or min_jobs is None:
            raise alerts.AlertRuleInvalid("The window and the minimum number of jobs must be whole numbers.")
        rule = alerts.alert_rule_create(
            user=signed_in_user(request),
            metric=metric,
            kind=post.get("kind", ""),
            threshold=threshold,
            window_minutes=window,
            min_jobs=min_jobs,
        )
    else:
        rule = alerts.alert_rule_create(
            user=signed_in_user(request), metric=metric, queue=post.get("queue", ""), threshold=threshold
        )
    return alerts.alert_rule_description(rule)


@login_required
@require_http_methods(["GET", "POST"])
def alerts_page(request: HttpRequest) -> HttpResponse:
    """Alerts take the operator view (403 otherwise), as the figures they watch do. POSTs are
    CSRF-checked by the middleware like every form; a refused rule re-renders the page with why
    (400) and what was typed."""
    user = signed_in_user(request)
    if not has_power(user, Power.USE_OPERATOR_VIEW):
        raise PermissionDenied("Alerts take the 'use the operator view' permission.")
    errors: dict[str, str] = {}
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action == DELETE:
            rule_id = _whole(request.POST.get("rule", ""))
            if rule_id is not None and alerts.alert_rule_delete(user=user, rule_id=rule_id):
                messages.info(request, "Alert deleted.")
            else:
                messages.error(request, "No such alert (already deleted?).")
            return redirect("frontend:alerts")
        if action == ADD:
            try:
                description = _add(request)
            except alerts.AlertRuleInvalid as exc:
                # Shown by the form it came from (an unknown metric: by the first form).
                queue_form = request.POST.get("metric") == AlertRule.Metric.QUEUE_WAIT
                errors["queue_wait" if queue_form else "failure_rate"] = str(exc)
            else:
                messages.success(request, f"Alert added: {description}.")
                return redirect("frontend:alerts")
        else:
            messages.error(request, "No such action.")
            return redirect("frontend:alerts")
    rules = alerts.alert_rules_of(user=user)
    context = {
        "rules": rules,
        "max_rules": alerts.MAX_RULES_PER_USER,
        "kinds": all_kinds(),
        "queues": queue_names(),
        "errors": errors,
        "posted": request.POST if errors else {},
        "failure_rate": AlertRule.Metric.FAILURE_RATE.value,
        "queue_wait": AlertRule.Metric.QUEUE_WAIT.value,
        "windows": alerts.WINDOW_MINUTES_RANGE,
        "min_jobs": alerts.MIN_JOBS_RANGE,
        "waits": alerts.QUEUE_WAIT_RANGE_SECONDS,
    }
    return render(request, "frontend/alerts.html", context, status=400 if errors else 200)
