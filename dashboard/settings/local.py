"""Local development: DEBUG on, SQLite and a local Redis unless the environment says otherwise."""

import os

from .base import *  # noqa: F403
from .base import VAR_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# Serve static files straight from the apps, no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

VAR_DIR.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("RUNBOARD_VAR_DIR", str(VAR_DIR))
