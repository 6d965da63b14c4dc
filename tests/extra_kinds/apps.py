from django.apps import AppConfig


class ExtraKindsConfig(AppConfig):
    name = "tests.extra_kinds"
    label = "extra_kinds"
