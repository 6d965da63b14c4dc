"""Settings: base (shared), local (the default), test, production; chosen by DJANGO_SETTINGS_MODULE."""
