"""Production settings: secure by default, configured only from the environment."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**base, "DJANGO_SETTINGS_MODULE": "dashboard.settings.production", **env},
    )  # fmt: skip


def test_check_deploy_reports_nothing():
    done = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64), DJANGO_ALLOWED_HOSTS="runboard.example.com",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_production_refuses_to_start_without_a_real_secret_key():
    done = manage("check", DJANGO_ALLOWED_HOSTS="runboard.example.com")
    assert done.returncode != 0 and "DJANGO_SECRET_KEY" in done.stderr


def test_production_logs_are_one_json_object_per_line():
    code = "import logging; logging.getLogger('runboard.test').warning('hello %s', 'world')"
    done = manage("shell", "-c", code, DJANGO_SECRET_KEY=secrets.token_urlsafe(64), DJANGO_ALLOWED_HOSTS="x")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        line["level"] == "WARNING" and line["message"] == "hello world" and line["logger"] == "runboard.test"
    )
