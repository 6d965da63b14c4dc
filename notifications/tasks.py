"""Thin Celery shells for notifications."""

from celery import shared_task

from . import webpush


@shared_task(name="notifications.send_web_push", ignore_result=True)
def send_web_push(notification_id: int) -> int:
    """Browser push for one notification (queued after commit for users with no open socket)."""
    return webpush.send_for_notification(notification_id=notification_id)
