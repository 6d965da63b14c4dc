"""Settings shared by every environment; values come from the environment with safe local defaults."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("RUNBOARD_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-local-development-key-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)
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

# SQLite by default; DATABASE_URL (e.g. postgres://...) for anything shared.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
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
AXES_FAILURE_LIMIT = int(os.environ.get("RUNBOARD_LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = timedelta(seconds=float(os.environ.get("RUNBOARD_LOGIN_COOLOFF", "900")))
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
# Bearer tokens (API, WebSocket, SSE): failures per client address (dashboard/throttle/tokens.py).
RUNBOARD_TOKEN_FAILURE_LIMIT = int(os.environ.get("RUNBOARD_TOKEN_FAILURE_LIMIT", "20"))
RUNBOARD_TOKEN_COOLOFF = float(os.environ.get("RUNBOARD_TOKEN_COOLOFF", "900"))

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
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# The PubSub layer was measured to deliver 100% at ~1 ms p50 where the default layer dropped
# messages under load (design.md §5). redis-py's async pool defaults to 100 connections, which
# made simultaneous connects fail: raise it.
CHANNEL_LAYER_BACKEND = os.environ.get(
    "CHANNEL_LAYER_BACKEND", "channels_redis.pubsub.RedisPubSubChannelLayer"
)
# Several comma-separated URLs shard the layer: groups are spread over them by a consistent hash.
CHANNEL_LAYER_REDIS_URLS = env_list(
    "CHANNEL_LAYER_REDIS_URLS", [os.environ.get("CHANNEL_LAYER_REDIS_URL", REDIS_URL)]
)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": CHANNEL_LAYER_BACKEND,
        "CONFIG": {
            "hosts": [
                {
                    "address": url,
                    "max_connections": int(os.environ.get("CHANNEL_LAYER_MAX_CONNECTIONS", "1000")),
                    "socket_connect_timeout": 5,
                    # redis-py 8 defaults to a 5 s read timeout, which breaks the default layer's
                    # blocking receive (django/channels_redis#422); reads are bounded elsewhere.
                    "socket_timeout": None,
                }
                for url in CHANNEL_LAYER_REDIS_URLS
            ],
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "runboard"),
        },
    }
}
# Only the default RedisChannelLayer expires groups (the PubSub layer's subscriptions last as long
# as the connection); sockets renew theirs well within it (notifications/consumers.py).
if os.environ.get("CHANNEL_LAYER_GROUP_EXPIRY"):
    CHANNEL_LAYERS["default"]["CONFIG"]["group_expiry"] = int(os.environ["CHANNEL_LAYER_GROUP_EXPIRY"])
# How often each web process checks its channel layer end to end; a failed check, or the layer's
# Redis connection coming back after a drop, closes that process's sockets with 4503 so clients
# reconnect and resume from the database instead of silently missing events.
RUNBOARD_LAYER_CHECK_INTERVAL = float(os.environ.get("RUNBOARD_LAYER_CHECK_INTERVAL", "5"))
RUNBOARD_SOCKET_HEARTBEAT = float(os.environ.get("RUNBOARD_SOCKET_HEARTBEAT", "25"))

# The longest hard time limit any job kind may ask for; the broker's visibility timeout is
# derived from it so a long job is never redelivered while it still runs (design.md §6).
RUNBOARD_MAX_JOB_TIME_LIMIT = int(os.environ.get("RUNBOARD_MAX_JOB_TIME_LIMIT", "3600"))

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Lowering it (CELERY_VISIBILITY_TIMEOUT) makes Redis redeliver running jobs' messages: harmless,
# since a job only starts from `queued`, and used by the tests to prove exactly that.
_visibility_timeout = os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(RUNBOARD_MAX_JOB_TIME_LIMIT + 600))
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, float] = {"visibility_timeout": int(_visibility_timeout)}
if os.environ.get("CELERY_UNACKED_RESTORE_INTERVAL"):
    # How often workers look for messages past their visibility timeout (kombu's default: a
    # scan every 100 s); the tests lower both to see a redelivery within seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_interval"] = float(
        os.environ["CELERY_UNACKED_RESTORE_INTERVAL"]
    )
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_throttle"] = 1
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Schedules live in the database (django-celery-beat): admins add job schedules in the admin,
# and the built-in ones below are installed there when beat starts.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Task results (django-celery-results) older than this are removed by Celery's backend cleanup.
CELERY_RESULT_EXPIRES = int(os.environ.get("CELERY_RESULT_EXPIRES", str(7 * 24 * 3600)))

# --- Runboard ----------------------------------------------------------------------------------
# Coalescing of progress (design.md §3.3): at most one push per PUSH_INTERVAL per job, a DB write
# of progress at most once per HEARTBEAT_INTERVAL, and a liveness write at least every
# HEARTBEAT_MAX_SILENCE even when a job reports nothing.
RUNBOARD_PUSH_INTERVAL = float(os.environ.get("RUNBOARD_PUSH_INTERVAL", "0.1"))
RUNBOARD_HEARTBEAT_INTERVAL = float(os.environ.get("RUNBOARD_HEARTBEAT_INTERVAL", "1.0"))
RUNBOARD_HEARTBEAT_MAX_SILENCE = float(os.environ.get("RUNBOARD_HEARTBEAT_MAX_SILENCE", "5.0"))
# A running job whose heartbeat is older than this is considered to have lost its worker.
RUNBOARD_STALE_AFTER = float(os.environ.get("RUNBOARD_STALE_AFTER", "30"))
RUNBOARD_REAPER_INTERVAL = float(os.environ.get("RUNBOARD_REAPER_INTERVAL", "10"))
# A queued job with no sign of its broker message for this long is enqueued again by the reaper
# (its message was lost: Redis restarted without persistence, or a worker died holding it).
RUNBOARD_REQUEUE_AFTER = float(os.environ.get("RUNBOARD_REQUEUE_AFTER", "600"))

# Uploaded inputs and produced result files; never served directly.
RUNBOARD_PRIVATE_DIR = Path(os.environ.get("RUNBOARD_PRIVATE_DIR", VAR_DIR / "private"))
RUNBOARD_UPLOAD_MAX_BYTES = int(os.environ.get("RUNBOARD_UPLOAD_MAX_BYTES", str(100 * 1024 * 1024)))
# Django refuses larger multipart bodies before our view can answer; keep it just above ours.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- HTTP limits (dashboard/http_limits.py, the protocol the Procfile's uvicorn runs) ------------
# uvicorn has no header or body read timeout of its own; these bound what a slow client can hold.
# Seconds from a connection's opening (or a later request's first byte) to the end of its headers.
RUNBOARD_HTTP_HEADER_TIMEOUT = float(os.environ.get("RUNBOARD_HTTP_HEADER_TIMEOUT", "10"))
# Bytes of request line and headers (httptools has no cap of its own); then 431.
RUNBOARD_HTTP_MAX_HEADER_BYTES = int(os.environ.get("RUNBOARD_HTTP_MAX_HEADER_BYTES", "65536"))
# A body gets RUNBOARD_HTTP_BODY_TIMEOUT seconds plus 1 s per RUNBOARD_HTTP_BODY_MIN_RATE bytes
# received: any upload at >= 16 KiB/s finishes, a stalled or trickling one is cut (then 408).
RUNBOARD_HTTP_BODY_TIMEOUT = float(os.environ.get("RUNBOARD_HTTP_BODY_TIMEOUT", "15"))
RUNBOARD_HTTP_BODY_MIN_RATE = int(os.environ.get("RUNBOARD_HTTP_BODY_MIN_RATE", str(16 * 1024)))
# Seconds a client may leave a response (SSE stream, download) unread before it is disconnected.
RUNBOARD_HTTP_WRITE_STALL_TIMEOUT = float(os.environ.get("RUNBOARD_HTTP_WRITE_STALL_TIMEOUT", "60"))
# Fresh connections still sending their first headers, per client address (not for proxies
# trusted by uvicorn's FORWARDED_ALLOW_IPS, which carry many clients).
RUNBOARD_HTTP_MAX_PENDING_PER_CLIENT = int(os.environ.get("RUNBOARD_HTTP_MAX_PENDING_PER_CLIENT", "32"))

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
RUNBOARD_LOG_LINES_KEPT = int(os.environ.get("RUNBOARD_LOG_LINES_KEPT", "1000"))
# The largest result a job may store (bytes of compact JSON); a larger one fails the job. Results
# are only ever served by reference over HTTP (payloads carry a 1 KiB summary), so this bounds
# the database and that response, not the realtime path.
RUNBOARD_RESULT_MAX_BYTES = int(os.environ.get("RUNBOARD_RESULT_MAX_BYTES", str(16 * 1024 * 1024)))
# Fairness: running jobs per user (the rest wait queued) and launches per user per minute.
RUNBOARD_MAX_RUNNING_PER_USER = int(os.environ.get("RUNBOARD_MAX_RUNNING_PER_USER", "2"))
RUNBOARD_LAUNCHES_PER_MINUTE = int(os.environ.get("RUNBOARD_LAUNCHES_PER_MINUTE", "30"))
# Extra modules that register job kinds (a deployment's own kinds), comma-separated.
RUNBOARD_KIND_MODULES = env_list("RUNBOARD_KIND_MODULES", [])
RUNBOARD_RESULT_FILE_RETENTION_DAYS = float(os.environ.get("RUNBOARD_RESULT_FILE_RETENTION_DAYS", "7"))
# Retention of finished jobs (with their logs and uploads) and of read notifications.
RUNBOARD_JOB_RETENTION_DAYS = float(os.environ.get("RUNBOARD_JOB_RETENTION_DAYS", "90"))
RUNBOARD_NOTIFICATION_RETENTION_DAYS = float(os.environ.get("RUNBOARD_NOTIFICATION_RETENTION_DAYS", "90"))

# Browser push (Web Push with VAPID). Unset keys fall back to var/vapid.json, which
# `manage.py generate_vapid_keys` writes (and `make run` runs) for local use.
RUNBOARD_VAPID_PUBLIC_KEY = os.environ.get("RUNBOARD_VAPID_PUBLIC_KEY", "")
RUNBOARD_VAPID_PRIVATE_KEY = os.environ.get("RUNBOARD_VAPID_PRIVATE_KEY", "")
RUNBOARD_VAPID_SUBJECT = os.environ.get("RUNBOARD_VAPID_SUBJECT", "mailto:admin@localhost")

CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {
        "task": "jobs.reap_stale_jobs",
        "schedule": RUNBOARD_REAPER_INTERVAL,
        "options": {"expires": RUNBOARD_REAPER_INTERVAL},
    },
    "purge-expired-result-files": {
        "task": "jobs.purge_expired_result_files",
        "schedule": 3600.0,
    },
    "retention": {
        "task": "jobs.apply_retention",
        "schedule": 6 * 3600.0,
    },
    "celery-backend-cleanup": {
        "task": "celery.backend_cleanup",
        "schedule": 24 * 3600.0,
    },
}

LOGGING = {
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
            "formatter": os.environ.get("LOG_FORMAT", "plain"),
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
    },
}
