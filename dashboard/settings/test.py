"""Settings for the test suite: fast hashing, a file SQLite DB the worker and web processes share."""

from .base import *  # noqa: F403
from .base import DATABASES, INSTALLED_APPS, VAR_DIR

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "tests.extra_kinds"]  # a job kind from another app
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

VAR_DIR.mkdir(parents=True, exist_ok=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # In-memory would be invisible to the Celery worker and web server the tests start.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
