#!/usr/bin/env python3
"""Make sure the Debian packages Runboard needs are present; install them when we are root.

Usage: system_deps.py NAME [NAME ...] where NAME is one of: redis-server, chromium, promtool, npm,
pgbouncer, python3-venv.
Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Where Debian's package puts it (in sbin: not on a non-root PATH).
PGBOUNCER = "/usr/sbin/pgbouncer"
# name -> (how to tell it is there, Debian package)
KNOWN = {
    "redis-server": (lambda: shutil.which("redis-server") is not None, "redis-server"),
    "chromium": (lambda: os.path.exists("/usr/bin/chromium"), "chromium"),
    # Prometheus' own linter for exposition text; the suite pipes /metrics through `promtool check
    # metrics` (tests/system/test_metrics_multiprocess.py). Debian ships it in the server package.
    "promtool": (lambda: shutil.which("promtool") is not None, "prometheus"),
    # Installs the suite's axe-core (tests/a11y/package.json, pinned by its package-lock.json).
    "npm": (lambda: shutil.which("npm") is not None, "npm"),
    "python3-venv": (lambda: False, f"python3.{sys.version_info.minor}-venv"),
    # The connection pooler the PostgreSQL pass of the suite runs behind (scripts/pgbouncer.py).
    "pgbouncer": (lambda: os.path.exists(PGBOUNCER), "pgbouncer"),
}
_updated = False


def apt_install(package: str) -> bool:
    global _updated
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        print("system_deps: apt-get update", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        _updated = True
    print(f"system_deps: apt-get install {package}", flush=True)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env, check=False
    )
    return done.returncode == 0


def ensure(name: str) -> bool:
    present, package = KNOWN[name]
    if present():
        return True
    if apt_install(package) and (name == "python3-venv" or present()):
        return True
    print(
        f"\nRunboard needs {name}, which is missing and could not be installed automatically.\n"
        f"Install it with:  sudo apt-get install {package}\n",
        file=sys.stderr,
    )
    return False


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        print(f"system_deps: unknown name(s) {unknown}; known: {sorted(KNOWN)}", file=sys.stderr)
        return 2
    return 0 if all([ensure(name) for name in names]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
