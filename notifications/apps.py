from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import push, signals

        signals.connect()
        # A script that publishes from a thread and is stopped still flushes (push.py).
        push.exit_normally_on_termination()
