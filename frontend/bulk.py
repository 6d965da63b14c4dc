"""Bulk actions (issue 16 §12): the operator picks jobs by a filter and an action, sees how many
it would act on ("Retry 12 jobs?", with examples), confirms, and reads what was done; below,
who did what. A form page: the preview is a GET (its URL is the filter), the action a POST of the
same filter and the confirmed count (jobs.bulk.bulk_apply refuses a count that changed)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from jobs import bulk
from jobs.kinds.registry import all_kinds
from jobs.models import JobBulkAction, JobState
from jobs.permissions import Power, has_power, signed_in_user

MINUTES = {"minutes": 1, "hours": 60, "days": 24 * 60}
VERBS = {  # action: (the question's verb, the past tense)
    bulk.BulkAction.RETRY: ("Retry", "Retried"),
    bulk.BulkAction.CANCEL: ("Cancel", "Cancelled"),
    bulk.BulkAction.DELETE: ("Delete", "Deleted"),
}
FILTER_FIELDS = ("action", "states", "kinds", "owner", "window", "within", "unit", "search")


class BulkFilterForm(forms.Form):
    """The page's filter: jobs.bulk.BulkFilter in form fields (the window as a number and unit)."""

    action = forms.ChoiceField(
        choices=[(action.value, verbs[0]) for action, verbs in VERBS.items()],
        widget=forms.RadioSelect,
        initial=bulk.BulkAction.RETRY.value,
    )
    states = forms.MultipleChoiceField(
        choices=JobState.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    kinds = forms.MultipleChoiceField(choices=(), required=False, widget=forms.CheckboxSelectMultiple)
    owner = forms.CharField(required=False, max_length=150, label="Owner (username)")
    window = forms.ChoiceField(
        choices=[("created", "created"), ("finished", "finished")], initial="created", label="Jobs"
    )
    within = forms.IntegerField(required=False, min_value=1, label="within the last")
    unit = forms.ChoiceField(choices=[(unit, unit) for unit in MINUTES], initial="hours", label="Unit")
    search = forms.CharField(required=False, max_length=100, label="Search text")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kinds"].choices = [(kind.name, kind.title) for kind in all_kinds()]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        within = data.get("within")
        if within and within * MINUTES.get(data.get("unit", ""), 1) > bulk.WINDOW_MAX_MINUTES:
            self.add_error("within", "At most a year.")
        return data

    def bulk_filter(self) -> bulk.BulkFilter:
        data = self.cleaned_data
        minutes = data["within"] * MINUTES[data["unit"]] if data.get("within") else None
        return bulk.BulkFilter(
            states=data["states"],
            kinds=data["kinds"],
            owner=data["owner"].strip(),
            created_within_minutes=minutes if data["window"] == "created" else None,
            finished_within_minutes=minutes if data["window"] == "finished" else None,
            search=data["search"].strip(),
        )


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _skipped(skips: list[bulk.BulkSkip]) -> str:
    return "; ".join(f"{skip['count']}: {skip['detail']}" for skip in skips)


def filter_summary(saved: dict[str, Any]) -> str:
    """A stored filter (``JobBulkAction.filter``) in a few words."""
    parts = []
    if saved.get("states"):
        parts.append("state " + " or ".join(saved["states"]))
    if saved.get("kinds"):
        parts.append("kind " + " or ".join(saved["kinds"]))
    if saved.get("owner"):
        parts.append(f"owner {saved['owner']}")
    for window in ("created", "finished"):
        if saved.get(f"{window}_within_minutes"):
            parts.append(f"{window} in the last {saved[f'{window}_within_minutes']} min")
    if saved.get("search"):
        parts.append(f"matching {saved['search']!r}")
    return ", ".join(parts) or "every job they may see"


def _audit_rows(entries: list[JobBulkAction]) -> list[dict[str, Any]]:
    return [
        {
            "entry": entry,
            "summary": filter_summary(entry.filter if isinstance(entry.filter, dict) else {}),
            "skipped": _skip_counts(entry.skipped if isinstance(entry.skipped, dict) else {}),
        }
        for entry in entries
    ]


def _skip_counts(skipped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in skipped.items())


def _at(page: str, query: QueryDict) -> str:
    return f"{page}?{query.urlencode()}" if query else page


def _filter_query(data: QueryDict) -> QueryDict:
    """The filter's own fields of a GET or POST (not the CSRF token, not the count)."""
    query = QueryDict(mutable=True)
    for name in FILTER_FIELDS:
        values = [value for value in data.getlist(name) if value]
        if values:
            query.setlist(name, values)
    return query


@login_required
@require_http_methods(["GET", "POST"])
def bulk_page(request: HttpRequest) -> HttpResponse:
    """The page takes the operator view; each job is then checked as its single-job action is
    (jobs.bulk). POSTs are CSRF-checked by the middleware like every form."""
    user = signed_in_user(request)
    if not has_power(user, Power.USE_OPERATOR_VIEW):
        raise PermissionDenied("Bulk actions take the 'use the operator view' permission.")
    page = reverse("frontend:bulk")
    if request.method == "POST":
        form = BulkFilterForm(request.POST)
        query = _filter_query(request.POST)
        raw_count = request.POST.get("confirmed_count", "")
        if not form.is_valid() or not (raw_count.isascii() and raw_count.isdigit() and len(raw_count) < 9):
            messages.error(request, "The filter or the confirmed count is not valid: preview again.")
            return redirect(_at(page, query))
        action = bulk.BulkAction(form.cleaned_data["action"])
        try:
            result = bulk.bulk_apply(
                user=user, bulk_filter=form.bulk_filter(), action=action, confirmed_count=int(raw_count)
            )
        except (bulk.SelectionChanged, bulk.SelectionTooLarge) as exc:
            messages.error(request, str(exc))
            query["preview"] = "1"
            return redirect(_at(page, query))
        note = f" Skipped {_skipped(result['skipped'])}" if result["skipped"] else ""
        messages.success(request, f"{VERBS[action][1]} {_jobs(result['acted'])}.{note}")
        return redirect(_at(page, query))

    previewing = "preview" in request.GET
    form = BulkFilterForm(request.GET if previewing or "action" in request.GET else None)
    context: dict[str, Any] = {
        "form": form,
        "audit": _audit_rows(bulk.bulk_actions_recent()),
        "limit": f"{bulk.BULK_MAX_JOBS:,}",
    }
    if previewing and form.is_valid():
        action = bulk.BulkAction(form.cleaned_data["action"])
        preview = bulk.bulk_preview(user=user, bulk_filter=form.bulk_filter(), action=action)
        context.update(
            preview=preview,
            question=f"{VERBS[action][0]} {_jobs(preview['actionable'])}?",
            verb=VERBS[action][0],
            hidden=[(name, value) for name, values in _filter_query(request.GET).lists() for value in values],
            jobs_word=_jobs(preview["actionable"]),
        )
    return render(request, "frontend/bulk.html", context)
