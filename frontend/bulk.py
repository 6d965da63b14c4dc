"""Bulk actions (issue 16 §12): the operator picks jobs by a filter and an action, sees how many
it would act on ("Retry 12 jobs?", with examples), confirms, and reads what was done; below,
who did what. A form page: the preview is a GET (its URL is the filter: the Operations page links
to the retry of a failure group's jobs with an exact error class and finished bounds), the action
a POST of the same filter and the preview's confirmation (jobs.bulk.bulk_apply acts on exactly the
jobs previewed, once)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic
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
BOUNDS = ("finished_after", "finished_before")  # from the query string, shown read-only
FILTER_FIELDS = (
    "action",
    "states",
    "kinds",
    "owner",
    "error_class",
    "window",
    "within",
    "unit",
    "search",
    *BOUNDS,
)


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
    # Not required: a link (the Operations page's) may give no window.
    window = forms.ChoiceField(
        choices=[("created", "created"), ("finished", "finished")],
        initial="created",
        required=False,
        label="Jobs",
    )
    within = forms.IntegerField(required=False, min_value=1, label="within the last")
    unit = forms.ChoiceField(
        choices=[(unit, unit) for unit in MINUTES], initial="hours", required=False, label="Unit"
    )
    search = forms.CharField(required=False, max_length=100, label="Search text")
    # ISO 8601 with an offset, checked by jobs.bulk.BulkFilter.
    finished_after = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    finished_before = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    _filter: bulk.BulkFilter

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kinds"].choices = [(kind.name, kind.title) for kind in all_kinds()]  # type: ignore[attr-defined]
        # Not declared on the class: Form.error_class is the class of its error lists.
        self.fields["error_class"] = forms.CharField(
            required=False, max_length=100, label="Error class (exact)"
        )
        self.order_fields(["action", "states", "kinds", "owner", "error_class"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        within = data.get("within")
        if within and within * MINUTES[data.get("unit") or "hours"] > bulk.WINDOW_MAX_MINUTES:
            self.add_error("within", "At most a year.")
        if not self.errors:
            try:
                self._filter = self._bulk_filter(data)
            except pydantic.ValidationError as exc:  # the finished bounds: one set of rules
                for error in exc.errors():
                    field = str(error["loc"][0]) if error["loc"] else None
                    self.add_error(field if field in self.fields else None, error["msg"])
        return data

    @staticmethod
    def _bulk_filter(data: dict[str, Any]) -> bulk.BulkFilter:
        minutes = data["within"] * MINUTES[data["unit"] or "hours"] if data.get("within") else None
        window = data["window"] or "created"
        return bulk.BulkFilter(
            states=data["states"],
            kinds=data["kinds"],
            owner=data["owner"].strip(),
            error_class=data["error_class"].strip(),
            created_within_minutes=minutes if window == "created" else None,
            finished_within_minutes=minutes if window == "finished" else None,
            finished_after=data["finished_after"].strip() or None,
            finished_before=data["finished_before"].strip() or None,
            search=data["search"].strip(),
        )

    def bulk_filter(self) -> bulk.BulkFilter:
        """The filter of a valid form."""
        return self._filter


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _skipped(skips: list[bulk.BulkSkip]) -> str:
    return "; ".join(f"{skip['count']}: {skip['detail']}" for skip in skips)


def _when(saved: Any) -> str:
    try:
        return f"{datetime.fromisoformat(str(saved)).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    except ValueError:
        return str(saved)


def filter_summary(saved: dict[str, Any], *, everything: str = "every job they may see") -> str:
    """A filter as stored (``JobBulkAction.filter``: ``BulkFilter`` as JSON) in a few words."""
    parts = []
    if saved.get("states"):
        parts.append("state " + " or ".join(saved["states"]))
    if saved.get("kinds"):
        parts.append("kind " + " or ".join(saved["kinds"]))
    if saved.get("owner"):
        parts.append(f"owner {saved['owner']}")
    if saved.get("error_class"):
        parts.append(f"error class {saved['error_class']}")
    for window in ("created", "finished"):
        if saved.get(f"{window}_within_minutes"):
            parts.append(f"{window} in the last {saved[f'{window}_within_minutes']} min")
    after, before = saved.get("finished_after"), saved.get("finished_before")
    if after and before:
        parts.append(f"finished from {_when(after)} to before {_when(before)}")
    elif after or before:
        parts.append(f"finished from {_when(after)}" if after else f"finished before {_when(before)}")
    if saved.get("search"):
        parts.append(f"matching {saved['search']!r}")
    return ", ".join(parts) or everything


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


def _filter_query(data: QueryDict, fields: tuple[str, ...] = FILTER_FIELDS) -> QueryDict:
    """The filter's own fields of a GET or POST (not the CSRF token, not the confirmation)."""
    query = QueryDict(mutable=True)
    for name in fields:
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
        confirmation = request.POST.get("confirmation", "")
        if not form.is_valid() or not 0 < len(confirmation) <= bulk.CONFIRMATION_MAX_LENGTH:
            messages.error(request, "The filter or the confirmation is not valid: preview again.")
            query["preview"] = "1"
            return redirect(_at(page, query))
        action = bulk.BulkAction(form.cleaned_data["action"])
        try:
            result = bulk.bulk_apply(
                user=user, bulk_filter=form.bulk_filter(), action=action, confirmation=confirmation
            )
        except bulk.AlreadyApplied as exc:  # a second click: not offered again at once
            messages.error(request, str(exc))
            return redirect(_at(page, query))
        except (bulk.PreviewAgain, bulk.ConfirmationInvalid, bulk.SelectionTooLarge) as exc:
            messages.error(request, str(exc))
            query["preview"] = "1"
            return redirect(_at(page, query))
        note = f" Skipped {_skipped(result['skipped'])}" if result["skipped"] else ""
        messages.success(request, f"{VERBS[action][1]} {_jobs(result['acted'])}.{note}")
        return redirect(_at(page, query))

    previewing = "preview" in request.GET
    form = BulkFilterForm(request.GET if previewing or "action" in request.GET else None)
    bounds = {name: request.GET[name] for name in BOUNDS if request.GET.get(name)}
    context: dict[str, Any] = {
        "form": form,
        "audit": _audit_rows(bulk.bulk_actions_recent(user=user)),
        "limit": f"{bulk.BULK_MAX_JOBS:,}",
        "bounds": filter_summary(bounds, everything="") if bounds else "",
        "unbounded": _at(
            page, _filter_query(request.GET, tuple(f for f in FILTER_FIELDS if f not in BOUNDS))
        ),
    }
    if previewing and form.is_valid():
        action = bulk.BulkAction(form.cleaned_data["action"])
        bulk_filter = form.bulk_filter()
        preview = bulk.bulk_preview(user=user, bulk_filter=bulk_filter, action=action)
        context.update(
            preview=preview,
            summary=filter_summary(bulk_filter.model_dump(mode="json"), everything="every job you may see"),
            question=f"{VERBS[action][0]} {_jobs(preview['actionable'])}?",
            verb=VERBS[action][0],
            hidden=[(name, value) for name, values in _filter_query(request.GET).lists() for value in values],
            jobs_word=_jobs(preview["actionable"]),
        )
    return render(request, "frontend/bulk.html", context)
