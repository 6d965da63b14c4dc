from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from . import inbox
from .models import AlertRule, Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Every write goes through the services that keep the unread count exact: adding is
    ``notify``, deleting (one, or the bulk action) ``notifications_delete``, and editing only
    rewords. Who has a notification and whether they read it are never admin fields."""

    list_display = ("title", "recipient", "level", "created_at", "read_at")
    list_filter = ("level",)
    list_select_related = ("recipient",)
    search_fields = ("title", "recipient__username")
    raw_id_fields = ("recipient", "job")

    def get_readonly_fields(self, request: HttpRequest, obj: Notification | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("read_at", "created_at")
        return ("recipient", "job", "read_at", "created_at")

    def save_model(self, request: HttpRequest, obj: Notification, form: Any, change: bool) -> None:
        if change:
            editable = [f for f in form.changed_data if f in inbox.NOTIFICATION_EDITABLE_FIELDS]
            inbox.notification_edit(notification_id=obj.pk, **{f: getattr(obj, f) for f in editable})
            return
        created = inbox.notify(
            recipient_id=obj.recipient_id,
            title=obj.title,
            body=obj.body,
            level=obj.level,
            link=obj.link,
            job_id=obj.job_id,
        )
        assert created is not None  # no topic: preferences never turn it off
        obj.pk, obj.created_at = created.pk, created.created_at

    def delete_model(self, request: HttpRequest, obj: Notification) -> None:
        inbox.notifications_delete(queryset=Notification.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        inbox.notifications_delete(queryset=queryset)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    """Operators' alerts (dashboard/alerts.py): to look at, or remove. Added on the alerts page
    (``alert_rule_create`` checks the kind, queue, ranges and the per-user cap), and the episode's
    state is the evaluation's to write (conditional updates), so neither is an admin form."""

    list_display = ("subscriber", "metric", "kind", "queue", "threshold", "firing", "since", "last_value")
    list_filter = ("metric", "firing")
    list_select_related = ("subscriber",)
    search_fields = ("subscriber__username", "kind", "queue")
    raw_id_fields = ("subscriber",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return False
