"""Settings for benchmark runs only: the project's settings plus the baselines' pieces.

celery-progress (a baseline) is installed from bench/requirements.txt and mounted by
``bench.urls`` (its polling endpoint) and ``bench.asgi_bench`` (its WebSocket consumer and the
ceiling consumer). Nothing here changes how the project itself behaves.
"""

from dashboard.settings.base import *  # noqa: F403
from dashboard.settings.base import INSTALLED_APPS, RUNBOARD_KIND_MODULES, VAR_DIR

INSTALLED_APPS = [*INSTALLED_APPS, "celery_progress"]
ROOT_URLCONF = "bench.urls"
ASGI_APPLICATION = "bench.asgi_bench.application"
# bench.kinds: the benchmark's job kind (timestamps in its progress messages) and the
# celery-progress task; the worker and web processes register them too.
RUNBOARD_KIND_MODULES = [
    *RUNBOARD_KIND_MODULES,
    *(["bench.kinds"] if "bench.kinds" not in RUNBOARD_KIND_MODULES else []),
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
VAR_DIR.mkdir(parents=True, exist_ok=True)
