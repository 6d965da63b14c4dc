"""scripts/pgbouncer.py, the pooler the PostgreSQL pass of `make test` runs behind (issue 17 §2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.system_deps import PGBOUNCER

ROOT = Path(__file__).resolve().parents[2]
SERVER = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/runboard")

PROBE = r"""
import json, os, stat, sys
from pathlib import Path
import psycopg
url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
ini = [p for p in Path(sys.argv[1]).glob("runboard-pgbouncer-*") if (p / "pgbouncer.ini").exists()]
modes = {}
for d in ini:
    modes[str(d)] = oct(stat.S_IMODE(d.stat().st_mode))
    for f in ("pgbouncer.ini", "users.txt"):
        modes[str(d / f)] = oct(stat.S_IMODE((d / f).stat().st_mode))
out = {"modes": modes, "pool_mode": os.environ.get("DATABASE_POOL_MODE")}
out["right"] = psycopg.connect(url).execute("select 1").fetchone()[0]
try:
    psycopg.connect(url.replace(os.environ.get("WRONG_FROM", "\0"), "wrong"), connect_timeout=5)
    out["wrong"] = "connected"
except Exception:
    out["wrong"] = "refused"
print(json.dumps(out))
"""


def _server_answers() -> bool:
    try:
        import psycopg

        psycopg.connect(SERVER.rsplit("/", 1)[0] + "/postgres", connect_timeout=2).close()
    except Exception:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not (os.path.exists(PGBOUNCER) and _server_answers()), reason="needs pgbouncer and a PostgreSQL server"
)


def _run(url: str, tmp_path: Path, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "scripts/pgbouncer.py", "--", sys.executable, "-c", PROBE, "/tmp"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": url, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_pooler_s_folder_and_config_are_its_own_not_world_writable(tmp_path):
    """Found by review: run as root, the folder was 0777 and its config 0666 in /tmp, so any
    local user could point the suite's database at another server."""
    seen = _run(SERVER, tmp_path)

    assert seen["pool_mode"] == "transaction" and seen["right"] == 1
    assert seen["modes"], seen
    for path, mode in seen["modes"].items():
        assert mode == ("0o700" if path.rsplit("/", 1)[-1].startswith("runboard-pgbouncer-") else "0o600"), (
            seen
        )


def test_a_password_in_the_url_is_what_the_pooler_asks_its_clients_for(tmp_path):
    """Found by review: the password was dropped (the child's URL had none)."""
    base = SERVER.split("://", 1)[1].split("@", 1)
    user = base[0].split(":", 1)[0]
    url = f"postgres://{user}:s%40cr%22t@{base[1]}"

    seen = _run(url, tmp_path, WRONG_FROM="s%40cr%22t")

    assert (seen["right"], seen["wrong"]) == (1, "refused")


def test_the_pooler_serves_thousands_of_connections_without_stalling(tmp_path):
    """Found by review: pgbouncer's log also went to a pipe nobody read; after ~200 connections
    (a connect and a disconnect line each) the pipe was full and the pooler's one thread, and every
    test with it, blocked (1,500 connections: timed out before, done in seconds after)."""
    code = (
        "import os, psycopg\n"
        "url = os.environ['DATABASE_URL'].rsplit('/', 1)[0] + '/postgres'\n"
        "for _ in range(1500):\n"
        "    with psycopg.connect(url) as c: c.execute('select 1')\n"
        "print('done')\n"
    )
    done = subprocess.run(
        [sys.executable, "scripts/pgbouncer.py", "--", sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "DATABASE_URL": SERVER},
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("done"), done.stdout + done.stderr
