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


def _database_settings(**env):
    code = (
        "import json; from django.db import connection as c; print(json.dumps(c.settings_dict, default=str))"
    )
    return manage(
        "shell", "-c", code, DJANGO_SECRET_KEY=secrets.token_urlsafe(64), DJANGO_ALLOWED_HOSTS="x",
        DATABASE_URL="postgres://app@db.internal:6432/runboard", **env,
    )  # fmt: skip


def test_behind_a_transaction_pooler_no_server_side_cursor_is_used():
    """Issue 17 §2: QuerySet.iterator() (the export, retention) opens a server-side cursor, which
    a transaction-mode pooler (PgBouncer) cannot keep between transactions."""
    pooled = _database_settings(DATABASE_POOL_MODE="transaction")
    direct = _database_settings(DATABASE_POOL_MODE="")  # not the suite's own (its PostgreSQL pass sets it)

    def disabled(done):
        return json.loads(done.stdout.strip().splitlines()[-1]).get("DISABLE_SERVER_SIDE_CURSORS", False)

    assert (disabled(pooled), disabled(direct)) == (True, False)


def test_an_unknown_pool_mode_stops_the_process_and_says_which_values_it_takes():
    done = _database_settings(DATABASE_POOL_MODE="statement")

    assert done.returncode != 0 and "DATABASE_POOL_MODE must be 'session' or 'transaction'" in done.stderr
