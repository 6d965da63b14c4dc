"""The Job: one launch of a job kind by a user, and its forward-only state machine."""

import uuid

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.db.models import Q

from jobs.conf import app_settings


def private_storage() -> FileSystemStorage:
    """Files only ever served through an owner-checked view, never from a public URL."""
    return FileSystemStorage(location=app_settings.PRIVATE_DIR, base_url=None)


# A job's label and error class are shown in every row and payload: short.
LABEL_MAX = 200
ERROR_CLASS_MAX = 100


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# The only moves a job may make, as target -> states it may come from. Services apply them as a
# conditional UPDATE (WHERE state IN sources), so a late or duplicate write can never move a
# finished job, whatever process it comes from: final states have no way out.
TRANSITIONS: dict[str, frozenset[str]] = {
    # Only the lost-worker recovery moves running -> queued, for kinds safe to re-run.
    JobState.QUEUED: frozenset({JobState.RUNNING}),
    JobState.RUNNING: frozenset({JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset({JobState.RUNNING}),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.RUNNING}),
    JobState.CANCELLED: frozenset({JobState.QUEUED, JobState.RUNNING}),
}


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=64)
    params = models.JSONField(default=dict)
    # What tells this job from others of its kind, e.g. "sales.csv (12.4 MB)" (issue 16 §4): its
    # kind's ``label(params)`` at launch, shown in rows, the job page, notifications and the
    # export, and searched. Empty for a kind that gives none.
    label = models.CharField(max_length=LABEL_MAX, blank=True, default="")
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)

    progress_current = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True)
    # Grows with every write of the row; pushes between writes extend it (see jobs.reporter).
    version = models.PositiveBigIntegerField(default=1)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When the job's message was last handed to the broker (or, waiting at its owner's cap, last
    # seen being retried): a job queued with no sign of its message for RUNBOARD_REQUEUE_AFTER is
    # enqueued again by the reaper, so a lost message (a Redis restart without persistence, a
    # worker killed holding a deferred retry) never leaves it queued forever. Empty on a queued
    # job: its message never reached the broker (it was down): "waiting for the queue", sent
    # again at the reaper's next tick (jobs.dispatch._enqueue, jobs.housekeeping.job_requeue_lost).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Admission control (jobs.admission): a queued job is handed to the broker only once the fair
    # scheduler admits it (the database is the queue of record). Empty: not admitted yet.
    # The failed attempt's Python traceback (its tail, at most TRACEBACK_MAX_CHARS): server
    # detail, shown only to those who may see every user's results (jobs.api job_result).
    traceback = models.TextField(blank=True, default="")
    admitted_at = models.DateTimeField(null=True, blank=True)
    # Why a queued job waits and where it stands, written by the scheduler when it changes:
    # wait_code is one of jobs.admission.WAIT_CODES, wait_note the sentence shown.
    wait_code = models.CharField(max_length=16, blank=True)
    wait_note = models.CharField(max_length=200, blank=True)
    wait_position = models.PositiveIntegerField(null=True, blank=True)

    celery_task_id = models.CharField(max_length=255, blank=True, db_index=True)
    # The whole result: served only by reference (GET /api/v1/jobs/<id>/result/), never in a payload.
    result = models.JSONField(null=True, blank=True)
    # Written with the result by the state machine, read instead of it by every payload: a short
    # summary (jobs.results.result_digest), whether it is the whole result, and the result's size
    # in bytes of compact UTF-8 JSON (None: no result).
    result_summary = models.JSONField(null=True, blank=True)
    result_summary_complete = models.BooleanField(default=False)
    result_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    # A file the job produced (e.g. an export), in private storage, served only to the owner.
    result_file = models.FileField(upload_to="results/", storage=private_storage, blank=True, max_length=300)
    error = models.TextField(blank=True)
    # The failure's exception class ("UnicodeDecodeError", "TimeLimitExceeded", "WorkerLost"...):
    # what failures are grouped by (issue 16 §13). Empty when it did not fail, or failed before
    # this was recorded.
    error_class = models.CharField(max_length=ERROR_CLASS_MAX, blank=True, default="")

    # Cooperative cancel: the reporter sees this at its next heartbeat and the job stops.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # How many times a worker has started it (a lost worker's job may be re-queued; a failed
    # attempt its kind retries goes back to the queue: jobs/retries.py).
    attempts = models.PositiveSmallIntegerField(default=0)
    # Attempts it may have in all: its kind's retry policy when it was created (1: no retries).
    max_attempts = models.PositiveSmallIntegerField(default=1)
    # Queued again after a failed attempt: not admitted before this instant (the backoff).
    retry_at = models.DateTimeField(null=True, blank=True)
    # The attempts that failed and were retried, oldest first: [{"attempt": n, "error": text
    # (at most 300 characters), "failed_at": ISO 8601, "retry_in": seconds}]; at most
    # max_attempts - 1 entries (jobs.retries.MAX_ATTEMPTS_LIMIT bounds it).
    attempt_errors = models.JSONField(default=list, blank=True)
    # Retry (same parameters) and re-run (edited parameters) make a new job pointing here.
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # For kinds that split their work: how many chunks run in parallel.
    chunks_total = models.PositiveIntegerField(default=0)
    # The schedule this job is a run of (its failures count towards the schedule's streak).
    schedule = models.ForeignKey(
        "JobSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )

    class Meta:
        ordering = ["-created_at"]
        # Operator powers (jobs/permissions.py: Power), granted through groups; superusers hold all.
        permissions = [
            ("view_all_jobs", "Can see every user's jobs"),
            ("act_on_any_job", "Can cancel, retry or re-run any user's job"),
            ("launch_staff_kinds", "Can launch staff-only job kinds"),
            ("view_all_results", "Can see other users' job results and logs"),
            ("broadcast", "Can send an announcement to every user"),
            ("use_operator_view", "Can use the operator view and metrics"),
            ("control_queues", "Can pause, resume and drain job kinds and queues"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="job_owner_created_idx"),
            models.Index(fields=["state", "heartbeat_at"], name="job_state_heartbeat_idx"),
            # Metrics (finished in the last hour) and retention read by finish time.
            models.Index(fields=["finished_at"], name="job_finished_idx"),
            # The scheduler reads queued jobs by admission, oldest first.
            models.Index(fields=["state", "admitted_at", "created_at"], name="job_admission_idx"),
            # Round-robin's memory: an owner's latest admission, one probe (jobs.admission).
            models.Index(fields=["owner", "admitted_at"], name="job_owner_admitted_idx"),
            # The jobs waiting for admission, by owner and kind, oldest first: a pass finds every
            # waiting (owner, kind) and each one's first jobs by probes, whatever the backlog.
            # (Not a partial index: SQLite's planner, without statistics, preferred the one above
            # and sorted every waiting job.)
            models.Index(
                fields=["state", "admitted_at", "owner", "kind", "created_at"], name="job_waiting_idx"
            ),
            # Reads that must not grow with history (issue 15 §4, migration 0013): everyone's
            # jobs newest first (the staff list and snapshot, the admin list: keyset pages in
            # the order they are read), the same within a state (the filtered lists), and an
            # owner's jobs in a state (the running count behind launch limits: a probe, not a
            # scan of every job the owner ever ran).
            models.Index(fields=["-created_at", "-id"], name="job_created_idx"),
            models.Index(fields=["state", "-created_at", "-id"], name="job_state_created_idx"),
            models.Index(fields=["owner", "state", "kind"], name="job_owner_state_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="job_state_valid"),
            models.CheckConstraint(
                condition=Q(progress_current__gte=0), name="job_progress_current_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(state__in=[JobState.QUEUED, JobState.RUNNING]) | Q(finished_at__isnull=False),
                name="job_final_has_finished_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class AdmissionControl(models.Model):
    """A kind or a queue that staff paused or drained (jobs.admission): its queued jobs stay
    queued (they say "paused"), running ones finish. No row, or paused=False: admitted as usual."""

    class Target(models.TextChoices):
        KIND = "kind", "Kind"
        QUEUE = "queue", "Queue"

    target = models.CharField(max_length=8, choices=Target.choices)
    name = models.CharField(max_length=64)
    paused = models.BooleanField(default=False)
    # Drain: paused before maintenance; the page shows it drained once nothing of it runs.
    draining = models.BooleanField(default=False)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target", "name"], name="admission_control_unique_target")
        ]

    def __str__(self) -> str:
        return f"{self.target} {self.name}: {'paused' if self.paused else 'running'}"


class AdmissionAudit(models.Model):
    """Who paused, resumed or drained what, and when (kept: the audit trail)."""

    action = models.CharField(max_length=8)  # pause, resume, drain
    target = models.CharField(max_length=8)
    name = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)  # kept if the user is deleted
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.target} {self.name}"


class JobChunk(models.Model):
    """One slice of a parallel job's work, run by its own Celery task."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    params = models.JSONField(default=dict)
    done = models.BooleanField(default=False)
    result = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="job_chunk_unique_index")]

    def __str__(self) -> str:
        return f"chunk {self.index} of {self.job_id}"


class JobLogLine(models.Model):
    """A line a job wrote with ctx.log(); the newest RUNBOARD_LOG_LINES_KEPT per job are kept."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    seq = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_log_unique_seq")]

    def __str__(self) -> str:
        return f"{self.seq}: {self.text[:60]}"


class Upload(models.Model):
    """A file a user uploaded as a job input, stored where only its owner's jobs can read it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    file = models.FileField(upload_to="uploads/", storage=private_storage, max_length=300)
    original_name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.original_name


class AccessToken(models.Model):
    """A personal access token for scripts (`Authorization: Bearer ...`); only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class JobSchedule(models.Model):
    """A job an admin scheduled for a user: every run is an ordinary job of that user.

    The timing lives in a django-celery-beat PeriodicTask that this row owns (services keep the
    two in step), so beat's database scheduler runs it with no code of ours in beat.
    """

    name = models.CharField(max_length=150, unique=True)
    kind = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="job_schedules"
    )
    every_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Run every N seconds (or give a crontab instead)."
    )
    crontab = models.CharField(
        max_length=100,
        blank=True,
        help_text='Five fields, e.g. "0 3 * * *" for 03:00 every day (in the time zone below).',
    )
    timezone = models.CharField(
        max_length=63,
        default="UTC",
        help_text='An IANA time zone name, e.g. "Europe/Berlin" (crontabs only).',
    )
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_run_at = models.DateTimeField(null=True, blank=True)
    # Runs that failed in a row (a success resets it); the owner is told once when it reaches
    # RUNBOARD_SCHEDULE_FAILURES_NOTIFY.
    failure_streak = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class JobBulkAction(models.Model):
    """Who retried, cancelled or deleted which jobs in bulk, and what came of it (jobs.bulk; kept:
    the audit trail)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)  # kept if the user is deleted
    action = models.CharField(max_length=8)  # retry, cancel, delete
    # The filter as given (jobs.bulk.BulkFilter, its windows in minutes back from ``at``).
    filter = models.JSONField(default=dict)
    matched = models.PositiveIntegerField(default=0)  # jobs the filter selected that they could see
    confirmed = models.PositiveIntegerField(default=0)  # the count they confirmed
    acted = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(default=dict, blank=True)  # {reason: count}
    # The jobs acted on (the new jobs of a retry), at most jobs.bulk.BULK_MAX_JOBS.
    job_ids = models.JSONField(default=list, blank=True)
    # The nonce of the preview's confirmation it spent (jobs.bulk): unique, so a confirmation acts
    # once even when two requests bring it at the same moment. Empty for the actions before.
    nonce = models.CharField(max_length=32, blank=True, default="", editable=False)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["nonce"], condition=~Q(nonce=""), name="jobs_bulk_action_nonce_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.acted}/{self.confirmed}"
