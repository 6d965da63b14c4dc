from django.apps import AppConfig


class ThrottleConfig(AppConfig):
    name = "dashboard.throttle"
    label = "throttle"
    verbose_name = "Sign-in throttling"
    default_auto_field = "django.db.models.BigAutoField"
