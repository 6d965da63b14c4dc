import json
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.paginator import EmptyPage, Page, Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_celery_beat.admin import CrontabScheduleAdmin, IntervalScheduleAdmin, PeriodicTaskAdmin
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from . import schedules, selectors
from .exceptions import Conflict, KindNotAllowed, RateLimited
from .kinds.registry import InvalidParams, UnknownKind, all_kinds, get_kind, may_launch
from .launch import job_cancel, job_create, job_retry
from .models import (
    AccessToken,
    AdmissionAudit,
    Job,
    JobBulkAction,
    JobLogLine,
    JobSchedule,
    JobState,
    Upload,
)
from .permissions import Power, has_power, signed_in_user


class KindFilter(admin.SimpleListFilter):
    """Every registered kind, whether or not a job of it exists yet."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind.name, kind.title) for kind in all_kinds()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(kind=self.value()) if self.value() else queryset


# How far past the count the admin's job list still opens pages when that count is an estimate:
# to the table's own estimated size, twice over (a filtered list can match most of the table while
# the planner guesses a handful of rows; measured in review: 6 estimated for 52,001), so every real
# row stays reachable and no OFFSET walks more than ~2x the table (the cost of Django's own last
# page); or, for a small table, this many times the estimated pages.
PAGES_PAST_ESTIMATE = 4


class BoundedCountPaginator(Paginator):
    """The admin's pages with a count that does not read every job (issue 15 §4: the job list
    took 45 -> 181 ms from 1,000 to 100,000 jobs, most of it COUNT(*)): exact up to
    ``selectors.EXACT_COUNT_LIMIT``, PostgreSQL's estimate beyond, which the page labels "about"
    (``admin/jobs/job/pagination.html``). Pages are still LIMIT/OFFSET: the first ones, which
    is what people open, are index reads."""

    @cached_property
    def bounded(self) -> selectors.BoundedCount:
        # The admin pages querysets (ChangeList), never lists.
        return selectors.bounded_count(cast(QuerySet[Job], self.object_list))

    @cached_property
    def count(self) -> int:
        return self.bounded.rows

    @property
    def estimated(self) -> bool:
        return not self.bounded.exact

    @property
    def count_label(self) -> str:
        """The count as the page prints it: exact ("7"), "about 52,001" (PostgreSQL's estimate),
        or "more than 10,000" when the estimate was below what the capped count proved."""
        if self.bounded.exact:
            return f"{self.count:,}"
        if self.count <= selectors.EXACT_COUNT_LIMIT + 1:
            return f"more than {selectors.EXACT_COUNT_LIMIT:,}"
        return f"about {self.count:,}"

    @cached_property
    def last_page_allowed(self) -> int:
        """The last page number an estimated list opens (see PAGES_PAST_ESTIMATE)."""
        table = selectors.planner_row_estimate(Job.objects.all()) or 0
        by_table = -(-2 * table // max(1, self.per_page))
        return max(self.num_pages * PAGES_PAST_ESTIMATE, by_table)

    def validate_number(self, number: Any) -> int:
        """Django's check, except that an estimated count does not end the list: when the estimate
        is low, the oldest pages lie past it, and Django would redirect them to ``?e=1``. Pages
        past the estimate open up to ``last_page_allowed`` (beyond, an OFFSET would walk more
        than the table), then are refused as Django refuses any page past the end."""
        try:
            return super().validate_number(number)
        except EmptyPage:
            if not self.estimated:
                raise
            page = int(number)  # super() has checked it is a whole number; not yet that it is >= 1
            if page < 1 or page > self.last_page_allowed:
                raise
            return page

    def page(self, number: Any) -> Page:
        """Django's page, without trimming the last one to the count when that is an estimate (a
        page past the end is empty)."""
        if not self.estimated:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(  # type: ignore[attr-defined]  # Django's hook for Page subclasses
            self.object_list[bottom : bottom + self.per_page], number, self
        )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "label", "owner", "state", "progress", "duration", "created_at")
    list_filter = ("state", KindFilter)
    # Newest first is read from job_created_idx (and job_state_created_idx under the state
    # filter); the count from BoundedCountPaginator; no second count of every job beside a
    # filtered one ("3 results (1,000,000 total)").
    paginator = BoundedCountPaginator
    show_full_result_count = False
    search_fields = ("id", "owner__username", "kind", "label", "celery_task_id", "error", "error_class")
    readonly_fields = [field.name for field in Job._meta.fields] + ["task_result"]
    actions = ["cancel_jobs", "retry_jobs"]
    list_select_related = ("owner",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Jobs are launched through the service (validation, enqueue), not typed in here.
        return False

    @admin.display(description="progress")
    def progress(self, job: Job) -> str:
        if job.progress_total:
            percent = 100 * job.progress_current // job.progress_total
            return f"{job.progress_current}/{job.progress_total} ({percent}%)"
        return str(job.progress_current)

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        if job.started_at and job.finished_at:
            return f"{(job.finished_at - job.started_at).total_seconds():.1f} s"
        return "—"

    @admin.display(description="Celery task result")
    def task_result(self, job: Job) -> str:
        result = TaskResult.objects.filter(task_id=job.celery_task_id).first()
        if result is None:
            return "—"
        url = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])
        return format_html('<a href="{}">{} ({})</a>', url, result.task_id, result.status)

    def has_act_on_any_job_permission(self, request: HttpRequest) -> bool:
        return has_power(request.user, Power.ACT_ON_ANY_JOB)

    @admin.action(description="Cancel the selected jobs", permissions=["act_on_any_job"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = 0
        for job in queryset.exclude(state__in=[JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]):
            try:
                job_cancel(user=signed_in_user(request), job_id=job.pk)
                done += 1
            except Conflict:
                pass
        self.message_user(request, f"Cancel requested for {done} job(s).")

    @admin.action(
        description="Retry the selected finished jobs (for their owners)", permissions=["act_on_any_job"]
    )
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = 0
        for job in queryset.filter(state__in=[JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]):
            try:
                job_retry(user=signed_in_user(request), job_id=job.pk)
                done += 1
            except (KindNotAllowed, Conflict, RateLimited, InvalidParams) as exc:
                self.message_user(request, f"{job}: {exc}", level=messages.ERROR)
        self.message_user(request, f"Retried {done} job(s).")


class JobScheduleForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=())
    request: Any = None  # set by JobScheduleAdmin.get_form: whose powers decide

    class Meta:
        model = JobSchedule
        fields = ["name", "kind", "params", "owner", "every_seconds", "crontab", "timezone", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user = self.request.user if self.request is not None else None
        # The field declared above: a ChoiceField (``fields`` is typed with the base Field).
        cast(forms.ChoiceField, self.fields["kind"]).choices = [
            (kind.name, kind.title) for kind in all_kinds(user=user)
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean returns cleaned_data
        user = self.request.user if self.request is not None else None
        owner = data.get("owner")
        if (
            owner is not None
            and user is not None
            and owner.pk != user.pk
            and not has_power(user, Power.ACT_ON_ANY_JOB)
        ):
            self.add_error("owner", "Scheduling jobs for another user takes the 'act on any job' permission.")
        if not self.errors:
            data["params"] = schedules.schedule_validate(
                kind=data.get("kind", ""), params=data.get("params") or {},
                every_seconds=data.get("every_seconds"), crontab=data.get("crontab", ""),
                timezone_name=data.get("timezone") or "UTC",
                owner_id=owner.pk if owner is not None else None, schedule_id=self.instance.pk,
            )  # fmt: skip
        return data


@admin.register(JobSchedule)
class JobScheduleAdmin(admin.ModelAdmin):
    form = JobScheduleForm
    list_display = ("name", "kind", "owner", "timing", "enabled", "next_run", "last_run_at", "last_outcome")
    list_filter = ("enabled",)
    list_select_related = ("owner", "last_job")
    readonly_fields = (
        "next_run", "last_run_at", "last_outcome", "failure_streak", "periodic_task", "last_job", "created_at"
    )  # fmt: skip
    actions = ["run_now", "pause", "resume"]

    @admin.display(description="timing")
    def timing(self, schedule: JobSchedule) -> str:
        return schedules.schedule_timing(schedule)

    @admin.display(description="next run")
    def next_run(self, schedule: JobSchedule) -> str:
        when = schedules.schedule_next_run(schedule)
        return when.isoformat(timespec="minutes") if when else "—"

    @admin.display(description="last run's outcome")
    def last_outcome(self, schedule: JobSchedule) -> str:
        return schedules.schedule_last_outcome(schedule) or "—"

    def has_act_on_any_job_permission(self, request: HttpRequest) -> bool:
        return has_power(request.user, Power.ACT_ON_ANY_JOB)

    @admin.action(description="Run the selected schedules now", permissions=["act_on_any_job"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        ran, limited = 0, 0
        for schedule in queryset:
            try:
                ran += schedules.schedule_run(schedule_id=schedule.pk, manual=True) is not None
            except RateLimited:
                limited += 1  # its owner is at their launch limit
        note = f"; {limited} not run: the owner is at their launch limit" if limited else ""
        self.message_user(request, f"Started {ran} run(s){note}.")

    @admin.action(description="Pause the selected schedules", permissions=["act_on_any_job"])
    def pause(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        for schedule in queryset:
            schedules.schedule_set_enabled(schedule_id=schedule.pk, enabled=False)
        self.message_user(request, f"Paused {len(queryset)} schedule(s).")

    @admin.action(description="Resume the selected schedules", permissions=["act_on_any_job"])
    def resume(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        for schedule in queryset:
            schedules.schedule_set_enabled(schedule_id=schedule.pk, enabled=True)
        self.message_user(request, f"Resumed {len(queryset)} schedule(s).")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def save_model(self, request: HttpRequest, obj: JobSchedule, form: Any, change: bool) -> None:
        schedules.schedule_save(schedule=obj)

    def delete_model(self, request: HttpRequest, obj: JobSchedule) -> None:
        schedules.schedule_delete(schedule=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[JobSchedule]) -> None:
        for schedule in queryset:
            schedules.schedule_delete(schedule=schedule)


class CheckedCrontabForm(forms.ModelForm):
    """django-celery-beat's crontab form, plus the check its field validators lack: that the
    expression can fire at all (its admin accepts ``0 0 31 2 *``, which beat then never runs)."""

    class Meta:
        model = CrontabSchedule
        fields = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean returns cleaned_data
        if not self.errors:
            expression = " ".join(str(data.get(name) or "*") for name in schedules.CRONTAB_FIELDS)
            try:
                if not schedules.crontab_can_fire(schedules.crontab_parse(expression)):
                    self.add_error("day_of_month", f"{expression!r} never fires: no date matches it.")
            except ValueError as exc:
                self.add_error("day_of_month", str(exc))
        return data


class ViewOnly:
    """A ModelAdmin mixin: rows are shown, never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# A job schedule's periodic task and its timing are written by jobs.schedules only (validated:
# the 60 s floor, a crontab that fires, the owner's count): django-celery-beat's periodic tasks
# are view only, and the interval or crontab row a job schedule uses is read-only in their admin
# (a review put an interval of 2 s on one).
def _used_by_a_periodic_task(obj: Any) -> bool:
    """Whether a periodic task uses this interval or crontab row: a job schedule's, or a built-in
    housekeeping task's (the reaper's interval set to 7 days would end nothing stalled; a review).
    Their tasks are view only, so their timing is too."""
    if isinstance(obj, IntervalSchedule | CrontabSchedule):
        uses = Q(interval=obj) if isinstance(obj, IntervalSchedule) else Q(crontab=obj)
        return PeriodicTask.objects.filter(uses).exists()
    return False


class _JobScheduleTasksReadOnly:
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and _used_by_a_periodic_task(obj):
            return False
        return super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and _used_by_a_periodic_task(obj):
            return False
        return super().has_delete_permission(request, obj)  # type: ignore[misc]


admin.site.unregister(PeriodicTask)
admin.site.unregister(IntervalSchedule)


@admin.register(PeriodicTask)
class CheckedPeriodicTaskAdmin(ViewOnly, PeriodicTaskAdmin):
    """View only: job schedules are written under Jobs > Job schedules (checked), the built-in
    housekeeping tasks come from settings (beat installs them when it starts). Its list actions
    (enable, disable, toggle, run) and any add let a task run ``jobs.run_schedule`` past every
    check, indirectly too (``celery.starmap`` over it; a review: 5 jobs a run, every second), or
    take a schedule's ``job-schedule:N`` name."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}


@admin.register(IntervalSchedule)
class CheckedIntervalScheduleAdmin(_JobScheduleTasksReadOnly, IntervalScheduleAdmin):
    pass


admin.site.unregister(CrontabSchedule)


@admin.register(CrontabSchedule)
class CheckedCrontabScheduleAdmin(_JobScheduleTasksReadOnly, CrontabScheduleAdmin):
    form = CheckedCrontabForm


class LaunchForUsersForm(ActionForm):
    kind = forms.ChoiceField(required=False, choices=())
    params = forms.CharField(required=False, initial="{}", help_text="JSON parameters")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The field declared above: a ChoiceField (``fields`` is typed with the base Field).
        cast(forms.ChoiceField, self.fields["kind"]).choices = [("", "— kind —")] + [
            (kind.name, kind.title) for kind in all_kinds()
        ]


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class RunboardUserAdmin(UserAdmin):
    """Django's user admin plus one action: launch a job kind for the selected users."""

    action_form = LaunchForUsersForm
    actions = ["launch_for_users"]

    def has_act_on_any_job_permission(self, request: HttpRequest) -> bool:
        return has_power(request.user, Power.ACT_ON_ANY_JOB)

    @admin.action(description="Launch the chosen kind for the selected users", permissions=["act_on_any_job"])
    def launch_for_users(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        kind = request.POST.get("kind", "")
        try:
            if not may_launch(request.user, get_kind(kind)):
                self.message_user(request, "You may not launch that kind.", level=messages.ERROR)
                return
        except UnknownKind:
            self.message_user(request, "Choose a job kind first.", level=messages.ERROR)
            return
        try:
            params = json.loads(request.POST.get("params") or "{}")
        except ValueError as exc:
            self.message_user(request, f"Parameters are not valid JSON: {exc}", level=messages.ERROR)
            return
        launched, limited = 0, 0
        for user in queryset:
            try:
                # A launch of each user's, within their launch limit like their own (a review: 45
                # in 4 s went through, then locked the user out of launching for a minute).
                job_create(owner=user, kind=kind, params=params)
                launched += 1
            except UnknownKind:
                self.message_user(request, "Choose a job kind first.", level=messages.ERROR)
                return
            except RateLimited:
                limited += 1
            except (InvalidParams, KindNotAllowed) as exc:
                self.message_user(request, f"{user}: {exc}", level=messages.ERROR)
        note = f"; {limited} not: at their launch limit" if limited else ""
        self.message_user(request, f"Launched {kind} for {launched} user(s){note}.")


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ("original_name", "owner", "size", "created_at")
    readonly_fields = ("id", "owner", "file", "original_name", "size", "created_at")


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at")
    readonly_fields = ("user", "name", "prefix", "digest", "created_at", "last_used_at")


admin.site.register(JobLogLine)


@admin.register(AdmissionAudit)
class AdmissionAuditAdmin(ViewOnly, admin.ModelAdmin):
    """Who paused, resumed or drained a kind or a queue, and when (read-only: the audit trail;
    the actions are on the Operations page)."""

    list_display = ("at", "username", "action", "target", "name")
    list_filter = ("action", "target")


@admin.register(JobBulkAction)
class JobBulkActionAdmin(ViewOnly, admin.ModelAdmin):
    """Who retried, cancelled or deleted jobs in bulk, with which filter, and what came of it
    (read-only: the audit trail; the actions are on the Bulk actions page and the API)."""

    list_display = ("at", "username", "action", "matched", "confirmed", "acted", "skipped")
    list_filter = ("action",)
    search_fields = ("username",)
    fields = readonly_fields = (
        "at", "user", "username", "action", "filter",
        "matched", "confirmed", "acted", "skipped", "jobs_acted_on",
    )  # fmt: skip

    @admin.display(description="jobs acted on")
    def jobs_acted_on(self, obj: JobBulkAction) -> str:
        """One id a line (the admin breaks the lines): the new jobs of a retry, else those acted on."""
        return "\n".join(str(job_id) for job_id in obj.job_ids or []) or "-"
