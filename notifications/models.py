"""Persisted notifications: the database is the truth, the socket only a fast hint."""

from django.conf import settings
from django.db import models


class Level(models.TextChoices):
    INFO = "info", "Info"
    SUCCESS = "success", "Success"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Notification(models.Model):
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["recipient", "-id"], name="notification_recipient_idx"),
            # Exactly the unread rows: a recount under the counter's lock, and marking all read,
            # cost what the user has unread, not their whole history.
            models.Index(
                fields=["recipient"], condition=models.Q(read_at__isnull=True), name="notification_unread_idx"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class NotificationState(models.Model):
    """Per-user counters kept by the services, so the unread count is one row read, however
    many years of notifications a user has (never a COUNT per event). ``unread_count`` equals
    the user's unread rows after every transaction: every write to those rows locks this row
    first (notifications/inbox.py, "The unread count")."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_state",
    )
    unread_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.unread_count} unread"


class NotificationPreference(models.Model):
    """Which events notify a user, and how (a toast in open tabs, browser push when away)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_preference",
    )
    job_succeeded = models.BooleanField(default=True)
    job_failed = models.BooleanField(default=True)
    job_cancelled = models.BooleanField(default=True)
    # Each failed attempt that will be retried (off: only the job's final outcome notifies).
    job_attempt_failed = models.BooleanField(default=False)
    announcements = models.BooleanField(default=True)
    toast = models.BooleanField(default=True)
    browser_push = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


class SocketConnection(models.Model):
    """An open WebSocket or SSE stream (any web process): for the per-user socket cap, closing
    the connections of a credential that ended or changed, and knowing whether a user is online
    (else browser push)."""

    channel_name = models.CharField(max_length=200, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    # The credential besides the session: the token it was opened with, the session's auth hash
    # at open (it changes with the password) and the privileges granted (credentials.py).
    token_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    auth_hash = models.CharField(max_length=128, blank=True)
    privileges = models.CharField(max_length=32, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    # Refreshed by the consumer's heartbeat; a row not seen lately belongs to a dead process.
    seen_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "opened_at"], name="socket_user_opened_idx")]

    def __str__(self) -> str:
        return self.channel_name


class PushSubscription(models.Model):
    """A browser's Web Push subscription (one per user and device)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions"
    )
    endpoint = models.URLField(max_length=1000, unique=True)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_success_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.endpoint[:60]}"


class AlertRule(models.Model):
    """An operator's subscription to one metric crossing a threshold (issue 16 §14; evaluated by
    ``dashboard.alerts.alerts_evaluate``), with the state of its current episode.

    ``failure_rate``: failed / (succeeded + failed) jobs of ``kind`` that finished in the last
    ``window_minutes``, in percent, once at least ``min_jobs`` of them were decided.
    ``queue_wait``: how long the oldest job still queued in ``queue`` has waited, in seconds.
    An episode starts when the value goes above ``threshold`` (``firing``, ``since``) and ends
    when it no longer is; each start and end notifies the subscriber once.
    """

    class Metric(models.TextChoices):
        FAILURE_RATE = "failure_rate", "Failure rate"
        QUEUE_WAIT = "queue_wait", "Queue wait"

    subscriber = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_rules"
    )
    metric = models.CharField(max_length=20, choices=Metric.choices)
    kind = models.CharField(max_length=64, blank=True)  # failure_rate: a registered kind's name
    queue = models.CharField(max_length=64, blank=True)  # queue_wait: a Celery queue's name
    # Percent (failure_rate, 0-100) or seconds (queue_wait); "above" means strictly greater.
    threshold = models.FloatField()
    window_minutes = models.PositiveSmallIntegerField(default=10)  # failure_rate only
    min_jobs = models.PositiveIntegerField(default=5)  # failure_rate only: decided jobs needed
    # The episode: written by conditional UPDATEs only (dashboard.alerts), never by save().
    firing = models.BooleanField(default=False)
    # When the rule entered its current state (firing: when the episode began); None until its
    # first change. Part of every state change's condition, so a stale read cannot repeat one.
    since = models.DateTimeField(null=True, blank=True)
    # Firing, but back at or below the threshold since then (None: not, or not firing): the
    # episode ends once it stays so for dashboard.alerts.KEEP_FIRING_FOR.
    clear_since = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)  # percent or seconds; None: no data
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(metric="failure_rate") & ~models.Q(kind=""))
                | (models.Q(metric="queue_wait") & ~models.Q(queue="")),
                name="alertrule_metric_has_target",
            ),
            models.CheckConstraint(condition=models.Q(threshold__gte=0), name="alertrule_threshold_gte_0"),
        ]

    def __str__(self) -> str:
        target = self.kind if self.metric == self.Metric.FAILURE_RATE else self.queue
        return f"{self.subscriber_id}: {self.metric} of {target} above {self.threshold:g}"
