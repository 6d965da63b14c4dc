"""Settings shared by every environment; values come from the environment with safe local defaults.

The environment is parsed with django-environ (``env``, made strict below). The ``RUNBOARD_*``
settings the apps read are declared, with their defaults, types and meanings, in jobs/conf.py,
notifications/conf.py and dashboard/conf.py (docs/settings.md); they are set here only from the
environment variable of the same name, when it is set.
"""

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from dashboard.conf import DashboardSettings, declared_settings, settings_from_environment
from jobs.conf import JobsSettings
from notifications.conf import NotificationsSettings


class StrictEnv(environ.Env):
    """django-environ with two lenient casts made strict, and a bad value naming its variable.

    django-environ parses a float by deleting every character but digits, ``,``, ``.`` and ``-``
    (``1e3`` would be 13.0) and reads any unknown word as ``False`` (``ture`` would switch a
    feature off): here a float is Python's ``float()``, a bool one of the listed words, and
    anything else stops the process with ImproperlyConfigured instead of running misconfigured.
    """

    BOOLEAN_FALSE_STRINGS = ("false", "off", "no", "n", "0")

    @classmethod
    def parse_value(cls, value: Any, cast: Any) -> Any:
        if cast is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{value!r} is not a finite number")
            return number
        if cast is bool:
            word = str(value).strip().lower()
            if word in cls.BOOLEAN_TRUE_STRINGS or word in cls.BOOLEAN_FALSE_STRINGS:
                return word in cls.BOOLEAN_TRUE_STRINGS
            raise ValueError(f"{value!r} is not one of true/false, yes/no, on/off, 1/0")
        return super().parse_value(value, cast)

    def get_value(
        self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET, parse_default: bool = False
    ) -> Any:
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:
            raise ImproperlyConfigured(f"Environment variable {var}: {exc}") from exc


env = StrictEnv()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env.str("RUNBOARD_VAR_DIR", default=str(BASE_DIR / "var")))
if not env.str("RUNBOARD_VAR_DIR", default="x").strip():
    raise ImproperlyConfigured("Environment variable RUNBOARD_VAR_DIR: empty (the working directory).")


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated variable: items stripped of spaces, empty ones dropped."""
    return [item for item in env.list(name, cast=str.strip, default=default) if item]


# --- Runboard's own settings ---------------------------------------------------------------------
# Every RUNBOARD_* setting is declared once, with its default, type and meaning, in jobs/conf.py,
# notifications/conf.py and dashboard/conf.py (docs/settings.md). Here each is set only when its
# environment variable of the same name is, parsed to the declared type (a bad value stops the
# process, naming the variable); otherwise the app's declared default applies. Strings are taken
# as they are (django-environ would read a leading "$" as a reference to another variable).
_CONF_CLASSES = (JobsSettings, NotificationsSettings, DashboardSettings)
_READERS: dict[str, Any] = {
    "float": env.float,
    "int": env.int,
    "bool": env.bool,
    "str": env.ENVIRON.__getitem__,
    "Path": env.ENVIRON.__getitem__,
    "list[str]": lambda name: env_list(name, []),
}
globals().update(settings_from_environment(env.ENVIRON, _READERS, *_CONF_CLASSES))


def _runboard(name: str) -> Any:
    """A RUNBOARD_* value this module builds other settings from: the environment's, or the
    declared default."""
    setting = f"RUNBOARD_{name}"
    return globals().get(setting, declared_settings(*_CONF_CLASSES)[setting].default)


# Read as is: django-environ takes a value starting with "$" for a reference to another variable,
# and Django's generated keys may start with one.
SECRET_KEY = env.ENVIRON.get("DJANGO_SECRET_KEY", "insecure-local-development-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_results",
    "django_celery_beat",
    "csp",
    "axes",
    "dashboard.throttle",
    "jobs",
    "notifications",
    "frontend",
]

MIDDLEWARE = [
    # Outermost, so it runs after every other middleware's response: a download or stream holds
    # no database connection while the client reads it (dashboard/db.py).
    "dashboard.db.CloseConnectionsBeforeStreaming",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (django-csp; the policy is below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Third-party admin templates rewritten without inline script, for the CSP (frontend/overrides/).
        "DIRS": [BASE_DIR / "frontend" / "overrides"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default; DATABASE_URL (e.g. postgres://...) for anything shared. django-environ parses
# it (a Unix socket host is written as a path: postgres:////var/run/postgresql/runboard).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# 0: a connection per use. Under ASGI, Django runs each HTTP request's database work in a
# thread of its own and each SSE stream in one for hours, so a kept connection is never reused by
# another request and an open stream would pin one (Django's docs: "When using ASGI, persistent
# connections should be disabled"; found by review, issue 15, after a default of 60).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection to a database host that went away silently (a failover that moves the address,
    # a dropped network path) must fail within seconds, not after the kernel's ~15 min of
    # retransmissions: the sockets' shared database thread keeps its connection (dashboard/db.py),
    # and every socket's database call would queue behind a hung one (found by review, issue 15).
    # libpq's own parameters; a value given in DATABASE_URL's query string wins.
    for name, value in {
        "connect_timeout": 10,  # seconds to open a connection
        "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged
        "keepalives": 1,
        "keepalives_idle": 30,  # s idle before the first probe
        "keepalives_interval": 10,  # s between probes
        "keepalives_count": 3,  # probes lost before the connection is dead
    }.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(name, value)
# Behind a pooler in transaction mode (PgBouncer's pool_mode = transaction: docs/operations.md,
# "Behind a connection pooler"), a connection is the client's only for one transaction, so no
# cursor may outlive one: Django's server-side cursors (QuerySet.iterator() on PostgreSQL) are
# turned off, as Django's docs ask ("Transaction pooling and server-side cursors").
DATABASE_POOL_MODE = env.str("DATABASE_POOL_MODE", default="")
if DATABASE_POOL_MODE not in ("", "session", "transaction"):
    raise ImproperlyConfigured(
        f"DATABASE_POOL_MODE must be 'session' or 'transaction' (or empty), not {DATABASE_POOL_MODE!r}."
    )
if DATABASE_POOL_MODE == "transaction":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat write concurrently: wait for locks instead of failing, take the write
    # lock up front (no deadlocking upgrades) and use WAL so readers don't block the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "frontend:home"
LOGOUT_REDIRECT_URL = "login"

# --- Sign-in throttling (docs/operations.md "Login throttling") ---------------------------------
# django-axes refuses a username/password sign-in (/login/, /admin/login/, any authenticate()) once
# the account, or the client address, has RUNBOARD_LOGIN_FAILURE_LIMIT failures each within the
# cool-off of the previous: 429, a message and Retry-After, until the cool-off has passed.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# RUNBOARD_LOGIN_* are environment variables only (dashboard.conf.ENVIRONMENT_ONLY), not settings.
AXES_FAILURE_LIMIT = env.int("RUNBOARD_LOGIN_FAILURE_LIMIT", default=10)
# django-axes logs "AXES: BEGIN version …" at every start of every process and command (found by
# review: it landed in the middle of `make run`'s banner); lockouts are still logged.
AXES_VERBOSE = False
AXES_COOLOFF_TIME = timedelta(seconds=env.float("RUNBOARD_LOGIN_COOLOFF", default=900.0))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own: per account, per address
# REMOTE_ADDR (IPv6 as its /64): behind a proxy, uvicorn --proxy-headers has already made it the
# client's address for proxies in FORWARDED_ALLOW_IPS; X-Forwarded-For is never read here.
AXES_CLIENT_IP_CALLABLE = "dashboard.throttle.address.request_address"
AXES_LOCKOUT_CALLABLE = "dashboard.throttle.login.lockout_response"
# Attempts while locked out are refused unrecorded, so a lockout ends a cool-off after the failure
# that caused it (and a flood cannot grow the attempt rows); a success resets nothing, or one
# valid account would wipe its address's count of guesses at other accounts.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
# No row per successful login: nothing here reads them and nothing would expire them.
AXES_DISABLE_ACCESS_LOG = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Redis, Channels, Celery -------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

# The PubSub layer was measured to deliver 100% at ~1 ms p50 where the default layer dropped
# messages under load (design.md §5). redis-py's async pool defaults to 100 connections, which
# made simultaneous connects fail: raise it.
CHANNEL_LAYER_BACKEND = env.str(
    "CHANNEL_LAYER_BACKEND", default="channels_redis.pubsub.RedisPubSubChannelLayer"
)
# Several comma-separated URLs shard the layer: groups are spread over them by a consistent hash.
CHANNEL_LAYER_REDIS_URLS = env_list(
    "CHANNEL_LAYER_REDIS_URLS", [env.str("CHANNEL_LAYER_REDIS_URL", default=REDIS_URL)]
)
CHANNEL_LAYER_MAX_CONNECTIONS = env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=1000)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": CHANNEL_LAYER_BACKEND,
        "CONFIG": {
            "hosts": [
                {
                    "address": url,
                    "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS,
                    "socket_connect_timeout": 5,
                    # redis-py 8 defaults to a 5 s read timeout, which breaks the default layer's
                    # blocking receive (django/channels_redis#422); reads are bounded elsewhere.
                    "socket_timeout": None,
                }
                for url in CHANNEL_LAYER_REDIS_URLS
            ],
            "prefix": env.str("CHANNEL_LAYER_PREFIX", default="runboard"),
        },
    }
}
# Only the default RedisChannelLayer expires groups (the PubSub layer's subscriptions last as long
# as the connection); sockets renew theirs well within it (notifications/consumers.py).
if env.str("CHANNEL_LAYER_GROUP_EXPIRY", default=""):
    CHANNEL_LAYERS["default"]["CONFIG"]["group_expiry"] = env.int("CHANNEL_LAYER_GROUP_EXPIRY")

# The broker's visibility timeout is derived from the longest hard time limit a job kind may ask
# for, so a long job is never redelivered while it still runs (design.md §6).

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Lowering it (CELERY_VISIBILITY_TIMEOUT) makes Redis redeliver running jobs' messages: harmless,
# since a job only starts from `queued`, and used by the tests to prove exactly that.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, float] = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=_runboard("MAX_JOB_TIME_LIMIT") + 600),
    # A broker that accepts but never answers (a frozen Redis) must not hold a launch forever:
    # the send fails after these seconds and the job waits for the queue (found by review: the
    # API never answered). Above the worker's 1 s BRPOP, so consuming is unaffected.
    "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=3.0),
    "socket_connect_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=3.0),
}
# One retry of a failed send (kombu's default is three): with the timeouts above, a launch
# answers within about 7 s even when the broker is frozen.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
if env.str("CELERY_UNACKED_RESTORE_INTERVAL", default=""):
    # How often workers look for messages past their visibility timeout (kombu's default: a
    # scan every 100 s); the tests lower both to see a redelivery within seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_interval"] = env.float("CELERY_UNACKED_RESTORE_INTERVAL")
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_throttle"] = 1
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Housekeeping (the reaper, re-queue and admission timer, retention, schedules firing) has a queue
# of its own, consumed by the Procfile's `housekeeping` process and no job worker, so no job can
# occupy or freeze it (issue 14).
HOUSEKEEPING_QUEUE = "housekeeping"
CELERY_TASK_ROUTES = {
    name: {"queue": HOUSEKEEPING_QUEUE}
    for name in (
        "jobs.reap_stale_jobs",
        "jobs.admit_jobs",
        "jobs.run_schedule",
        "jobs.apply_retention",
        "jobs.purge_expired_result_files",
        "jobs.evaluate_alerts",
        "celery.backend_cleanup",
    )
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Schedules live in the database (django-celery-beat): admins add job schedules in the admin,
# and the built-in ones below are installed there when beat starts.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Task results (django-celery-results) older than this are removed by Celery's backend cleanup.
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES", default=7 * 24 * 3600)

# --- Runboard ----------------------------------------------------------------------------------

# Uploaded inputs and produced result files, never served directly: under the local state
# directory, wherever RUNBOARD_VAR_DIR moves it (the app's own default is the checkout's var/).
RUNBOARD_PRIVATE_DIR = Path(env.str("RUNBOARD_PRIVATE_DIR", default=str(VAR_DIR / "private")))
# Django refuses larger multipart bodies before our view can answer; keep it just above ours.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- HTTP limits (dashboard/http_limits.py, the protocol the Procfile's uvicorn runs) ------------
# uvicorn has no header or body read timeout of its own; these bound what a slow client can hold.

# --- Content-Security-Policy (django-csp; docs/operations.md "Content-Security-Policy") ---------
# Scripts only from our own files (ES modules, no inline script or handler, no eval); data for a
# page travels in <script type="application/json"> islands, which are not executed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],  # same-origin fetch, EventSource and ws(s):// (CSP Level 3)
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}


CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {
        "task": "jobs.reap_stale_jobs",
        "schedule": _runboard("REAPER_INTERVAL"),
        # A pass not started within one interval is dropped: the next one does the same work,
        # so a housekeeping process that was down finds one pass waiting, not a backlog.
        # (`expires` for Celery's file scheduler; django-celery-beat's reads `expire_seconds`
        # and silently drops `expires`.)
        "options": {"expires": _runboard("REAPER_INTERVAL"), "expire_seconds": _runboard("REAPER_INTERVAL")},
    },
    "purge-expired-result-files": {
        "task": "jobs.purge_expired_result_files",
        "schedule": 3600.0,
    },
    "retention": {
        "task": "jobs.apply_retention",
        "schedule": 6 * 3600.0,
    },
    # Operators' alerts (docs/alerts.md): each rule's metric against its threshold. A pass not
    # started within its interval is dropped, as the reaper's: the next one sees the same.
    "evaluate-alerts": {
        "task": "jobs.evaluate_alerts",
        "schedule": 30.0,
        "options": {"expires": 30.0, "expire_seconds": 30.0},
    },
    "celery-backend-cleanup": {
        "task": "celery.backend_cleanup",
        "schedule": 24 * 3600.0,
    },
}

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "dashboard.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": env.str("LOG_FORMAT", default="plain"),
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
    },
}
