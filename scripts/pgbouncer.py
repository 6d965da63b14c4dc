#!/usr/bin/env python
"""Run a command with its database behind a PgBouncer in transaction pooling mode (issue 17 §2).

Usage: DATABASE_URL=postgres://user@host:5432/name scripts/pgbouncer.py -- COMMAND [ARG ...]

Starts Debian's ``pgbouncer`` on a free local port, in front of DATABASE_URL's server (every
database name is passed through), runs COMMAND with DATABASE_URL pointing at the pooler and
DATABASE_POOL_MODE=transaction (which the settings read: docs/operations.md, "Behind a
connection pooler"), and stops the pooler when COMMAND ends; exits with COMMAND's status.
PGBOUNCER_ADMIN_URL, also set for COMMAND, reaches the pooler's admin console (``release``).
Standard library only, except ``release`` (psycopg, from the virtualenv).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# Debian's package puts it in sbin (scripts/system_deps.py installs it).
PGBOUNCER = "/usr/sbin/pgbouncer"
ADMIN_ENV = "PGBOUNCER_ADMIN_URL"
POOL_MODE_ENV = "DATABASE_POOL_MODE"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(server_url: str, port: int, directory: Path) -> tuple[str, str]:
    """pgbouncer.ini's text for ``server_url``'s server, and the URL clients use instead."""
    server = urlsplit(server_url)
    user = server.username or "postgres"
    password = unquote(server.password or "")
    # The URL's password, if any, is what clients give the pooler and the pooler gives the server
    # (md5); without one, trust, as the local server this is for (the pooler listens on
    # 127.0.0.1 only). Users are listed either way (auth_file).
    quoted = password.replace('"', '""')
    (directory / "users.txt").write_text(f'"{user}" "{quoted}"\n')
    auth = "md5" if password else "trust"
    text = f"""[databases]
* = host={server.hostname or "127.0.0.1"} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = {auth}
auth_file = {directory / "users.txt"}
admin_users = {user}
pool_mode = transaction
; Every test process (web, workers, the runner) shares one pool per database: enough that none
; waits long, few enough that PostgreSQL's max_connections (100) is never the limit.
default_pool_size = 40
max_client_conn = 2000
; libpq and psycopg send these at startup; the pooler forwards none of them to a shared server.
ignore_startup_parameters = extra_float_digits,options
log_connections = 0
log_disconnections = 0
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""
    credentials = user + (f":{quote(password, safe='')}" if password else "")
    pooled = urlunsplit(server._replace(netloc=f"{credentials}@127.0.0.1:{port}"))
    return text, pooled


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise SystemExit(f"pgbouncer exited with status {process.returncode}:\n{tail}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("pgbouncer did not answer within 10 s")


def release(database: str) -> None:
    """Close the pooler's server connections to ``database`` (KILL, then RESUME: new clients may
    connect again), so PostgreSQL lets it be dropped. No-op without PGBOUNCER_ADMIN_URL."""
    url = os.environ.get(ADMIN_ENV)
    if not url:
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"KILL {database}")  # the admin console takes no parameters
        admin.execute(f"RESUME {database}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        print("pgbouncer.py: DATABASE_URL must be a postgres:// URL", file=sys.stderr)
        return 2
    binary = shutil.which("pgbouncer") or PGBOUNCER
    directory = Path(tempfile.mkdtemp(prefix="runboard-pgbouncer-"))
    port = _free_port()
    text, pooled = _config(server_url, port, directory)
    (directory / "pgbouncer.ini").write_text(text)
    for path in directory.iterdir():
        path.chmod(0o600)  # the folder is 0700 (mkdtemp); its files are its owner's alone too
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root: it runs as nobody, which owns its folder (mode 0700:
        # no other local user may read the password or rewrite the config; found by review, the
        # folder was world-writable).
        nobody = pwd.getpwnam("nobody")
        for path in [directory, *directory.iterdir()]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        command[1:1] = ["-u", "nobody"]
    # Its log goes to the file the ini names (connections and disconnections not logged: one of
    # each per database use). Never a pipe nobody reads: pgbouncer also writes its log to stderr
    # when not quiet, and a full pipe would block its one thread, and every test with it (found
    # by review).
    command[1:1] = ["-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, process, directory / "pgbouncer.log")
        env = {
            **os.environ,
            "DATABASE_URL": pooled,
            POOL_MODE_ENV: "transaction",
            ADMIN_ENV: urlunsplit(urlsplit(pooled)._replace(path="/pgbouncer")),
        }
        print(f"pgbouncer.py: PgBouncer (transaction pooling) at 127.0.0.1:{port}", flush=True)
        return subprocess.call(argv[1:], env=env)
    finally:
        process.send_signal(signal.SIGINT)  # a "safe shutdown": waits for the clients' queries
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
