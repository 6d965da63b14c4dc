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
