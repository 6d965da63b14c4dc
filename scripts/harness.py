"""The one place that starts Runboard's processes, for `make run`, the tests and the benchmarks.

- ``free_port``, ``wait_for_redis``, ``wait_for_http``: the small waits everything needs;
- ``Process``: one subprocess with its output in a log file (start, wait for a log line or an
  HTTP answer, stop with SIGTERM then SIGKILL, CPU and memory from /proc);
- ``RedisServer``: a private redis-server on a free port (no persistence, snapshots, or an
  fsync'ed append-only file), restartable on the same port;
- ``WebServer``, ``celery_worker``, ``celery_housekeeping``, ``celery_beat``: the web, worker,
  housekeeping and beat processes started from the Procfile's own lines, so every caller runs
  them as a deployment does.

It imports nothing from the project (only ``redis``, lazily), so ``scripts/run.py`` (with the
repository root on ``sys.path``), ``tests`` (``pythonpath = .``) and ``bench`` can all use it as
``scripts.harness``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- ports and waits ------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers do: a port whose old connections linger in TIME_WAIT is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(start: int | None = None) -> int:
    """A free local TCP port: the system's pick, or the first free one from ``start`` (a port a
    person may want to remember, as `make run`'s 8000)."""
    if start is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for port in range(start, start + 200):
        if port_is_free(port):
            return port
    raise RuntimeError(f"no free port found from {start}")


def wait_until(
    condition: Callable[[], bool], *, timeout: float, proc: subprocess.Popen[Any] | None = None
) -> bool:
    """Poll ``condition`` until it is true (True), ``proc`` exits or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.05)
    return False


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def http_answers(url: str) -> bool:
    """True when ``url`` answers (any status below 400), straight, never through a proxy."""
    try:
        with _NO_PROXY.open(url, timeout=1):
            return True
    except OSError:
        return False


def wait_for_redis(url: str, *, timeout: float, proc: subprocess.Popen[Any] | None = None) -> bool:
    return wait_until(lambda: redis_answers(url), timeout=timeout, proc=proc)


def wait_for_http(url: str, *, timeout: float, proc: subprocess.Popen[Any] | None = None) -> bool:
    return wait_until(lambda: http_answers(url), timeout=timeout, proc=proc)


# --- the Procfile ---------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def procfile_command(entry: str, *extra_args: str, replace: Mapping[str, str] | None = None) -> list[str]:
    """The Procfile's ``entry`` line for ``subprocess`` (its ``${VAR:-default}``s read from the
    environment), with ``extra_args`` appended and each ``replace`` key, which must be there,
    swapped for its value. ``exec`` puts the program in the shell's place, so signals, the pid and
    /proc figures are the program's own."""
    line = procfile()[entry]
    for old, new in (replace or {}).items():
        if old not in line:
            raise RuntimeError(f"the Procfile's {entry} line has no {old!r}")
        line = line.replace(old, new)
    return ["sh", "-c", " ".join(["exec", line, *map(shlex.quote, extra_args)])]


# prometheus-client's multiprocess directory (dashboard/metrics.py): every process of one
# deployment writes its counters there and /metrics adds them up.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_harness_metrics_dir: str | None = None


def fresh_metrics_dir(directory: Path | str) -> str:
    """``directory`` made, or emptied of prometheus-client's files (``*.db``): what a deploy's
    start does (docs/operations.md), so a new deployment's counters start from zero and no file of
    a process gone is read again. Returns it as a string, for the environment."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return str(path)


def _metrics_dir() -> str:
    """This process's deployment directory: one fresh temporary directory for every process it
    starts (a test session, a benchmark run), removed when it exits."""
    global _harness_metrics_dir
    if _harness_metrics_dir is None:
        _harness_metrics_dir = tempfile.mkdtemp(prefix="runboard-metrics-")
        atexit.register(shutil.rmtree, _harness_metrics_dir, ignore_errors=True)
    return _harness_metrics_dir


def process_env(env: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``env`` (default: this process's) with the virtualenv's bin first on PATH (the Procfile
    names ``uvicorn`` and ``celery``), unbuffered Python output, a metrics directory shared by
    the processes this one starts (unless ``env`` names one: ``fresh_metrics_dir``) and ``extra``
    on top."""
    base = dict(os.environ if env is None else env)
    if not base.get(METRICS_DIR_ENV):
        base[METRICS_DIR_ENV] = _metrics_dir()
    path = base.get("PATH", "")
    if not path.startswith(f"{BIN}{os.pathsep}"):
        base["PATH"] = f"{BIN}{os.pathsep}{path}"
    return {**base, "PYTHONUNBUFFERED": "1", **extra}


# --- one process ----------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Soft open-files limit up to the hard one (socket benchmarks hold thousands)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Process:
    """A subprocess whose output goes to ``log_path`` (with ``pipes``: only stderr; stdin and
    stdout are then line-buffered text pipes for a line protocol). ``own_group``: in a process
    group of its own, so a Ctrl-C at the terminal reaches only its parent, which stops it once."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        pipes: bool = False,
        many_files: bool = False,
        own_group: bool = False,
    ) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = self.log_path.open("wb")
        options: dict[str, Any] = {"stdout": self._log, "stderr": subprocess.STDOUT}
        if pipes:
            options = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self._log}
            options.update(text=True, bufsize=1)
        self.proc: subprocess.Popen[Any] = subprocess.Popen(
            list(args), cwd=cwd, env=None if env is None else dict(env),
            preexec_fn=raise_fd_limit if many_files else None, process_group=0 if own_group else None,
            **options,
        )  # fmt: skip
        self.pid = self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def wait_for_log(self, needle: str, timeout: float) -> float:
        """Wait until the log shows ``needle``; the seconds it took. RuntimeError (with the log's
        end) if the process exits or the time runs out first."""
        started = time.monotonic()
        if wait_until(lambda: needle in self.log(), timeout=timeout, proc=self.proc) or needle in self.log():
            return time.monotonic() - started
        raise RuntimeError(f"{self.name} did not log {needle!r}:\n{self.log()[-4000:]}")

    def wait_for_http(self, url: str, timeout: float) -> None:
        """Wait until ``url`` answers; stop the process and raise (with its log) if it does not."""
        if not wait_for_http(url, timeout=timeout, proc=self.proc):
            self.stop()
            raise RuntimeError(f"{self.name} did not answer {url}:\n{self.log()[-4000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (from /proc/<pid>/stat; 1/CLK_TCK steps)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Send ``sig`` and wait; SIGKILL after ``timeout`` seconds. Closes the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Restartable:
    """Something that runs one process at a time (a restart replaces it): ``process``."""

    process: Process | None = None

    @property
    def proc(self) -> subprocess.Popen[Any]:
        assert self.process is not None
        return self.process.proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is not None:
            self.process.stop(sig, timeout=timeout)


# --- Redis ----------------------------------------------------------------------------------------


class RedisServer(Restartable):
    """A private redis-server on ``port`` or a free one, files and log in ``directory``.

    No persistence by default; ``save="60 1"`` for snapshots; ``aof=True`` for an fsync'ed
    append-only file, so a restart (even after SIGKILL) keeps the queues, as a production Redis
    configured for Celery does. ``restart`` and ``start`` after ``stop`` reuse the port.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int | None = None,
        save: str = "",
        aof: bool = False,
        extra_args: Sequence[str] = (),
        name: str = "redis",
        start: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.name = name
        self.starts = 0
        self.args = ["--save", save, "--appendonly", "yes" if aof else "no"]
        if aof:
            self.args += ["--appendfsync", "always"]
        self.args += list(extra_args)
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        pinned = self.port is not None
        for _attempt in range(1 if pinned else 5):
            self.starts += 1
            port = self.port if pinned else free_port()
            process = Process(
                f"{self.name}-{self.starts}",
                [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 *self.args],
                log_path=self.directory / f"{self.name}-{self.starts}.log",
            )  # fmt: skip
            if wait_for_redis(f"redis://127.0.0.1:{port}/0", timeout=timeout, proc=process.proc):
                self.port, self.process = port, process
                return self
            process.stop(signal.SIGKILL)
            time.sleep(0.2)
        raise RuntimeError(f"could not start redis-server; see {self.directory}/{self.name}-*.log")

    def restart(self, *, down_for: float = 0.0, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- web, worker, beat: the Procfile's lines ------------------------------------------------------


class WebServer(Restartable):
    """The Procfile's ``web`` line (uvicorn) on ``port`` or a free one, restartable on it; ``web``
    is the current process (each start logs to ``<name>-<n>.log`` in ``log_dir``).

    ``replace`` changes the command line (``{"dashboard.asgi:application": "bench.asgi_bench:
    application"}``); it is ready when ``ready_path`` answers.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        log_dir: Path,
        name: str = "web",
        port: int | None = None,
        host: str = "127.0.0.1",
        replace: Mapping[str, str] | None = None,
        ready_path: str = "/login/",
        timeout: float = 60,
        many_files: bool = False,
        own_group: bool = False,
        start: bool = True,
    ) -> None:
        self.name = name
        self.log_dir = log_dir
        self.own_group = own_group
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = self.url.replace("http", "ws", 1)
        self.origin = self.url
        self.env = process_env(env, HOST=host, PORT=str(self.port))
        self.command = procfile_command("web", replace=replace)
        self.ready_path = ready_path
        self.timeout = timeout
        self.many_files = many_files
        self.starts = 0
        if start:
            self.start()

    @property
    def web(self) -> Process:
        """The current process."""
        assert self.process is not None
        return self.process

    def launch(self) -> Process:
        """Start the process, without waiting for it to answer."""
        self.starts += 1
        self.process = Process(
            f"{self.name}-{self.starts}", self.command, env=self.env,
            log_path=self.log_dir / f"{self.name}-{self.starts}.log", many_files=self.many_files,
            own_group=self.own_group,
        )  # fmt: skip
        return self.process

    def start(self) -> None:
        self.launch().wait_for_http(f"{self.url}{self.ready_path}", timeout=self.timeout)

    def cpu_seconds(self) -> float:
        return self.web.cpu_seconds()

    def rss_bytes(self) -> int:
        return self.web.rss_bytes()


def celery_worker(
    name: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    hostname: str | None = None,
    concurrency: int = 2,
    loglevel: str = "INFO",
    extra_args: Sequence[str] = (),
    gossip: bool = False,
    wait: bool = True,
    timeout: float = 60,
    many_files: bool = False,
    own_group: bool = False,
) -> Process:
    """A Celery worker from the Procfile's ``worker`` line (``hostname``, default ``name``, is the
    part before ``@%h``); unless ``gossip``, without mingle and gossip (it starts faster and talks
    to no other worker); ``wait``: until it logs `` ready.``."""
    worker_env = process_env(
        env, WORKER_NAME=hostname or name, WORKER_CONCURRENCY=str(concurrency), LOG_LEVEL=loglevel
    )
    alone = () if gossip else ("--without-mingle", "--without-gossip")
    return _celery_process(
        name, procfile_command("worker", *alone, *extra_args), worker_env, log_dir=log_dir,
        wait=wait, timeout=timeout, many_files=many_files, own_group=own_group,
    )  # fmt: skip


def _celery_process(
    name: str, command: list[str], env: dict[str, str], *, log_dir: Path, wait: bool, timeout: float,
    many_files: bool = False, own_group: bool = False,
) -> Process:  # fmt: skip
    """A Celery worker process (a job worker or housekeeping) logging to ``<log_dir>/<name>.log``;
    ``wait``: until it logs `` ready.``."""
    process = Process(
        name, command, env=env, log_path=log_dir / f"{name}.log", many_files=many_files,
        own_group=own_group,
    )  # fmt: skip
    if wait:
        process.wait_for_log(" ready.", timeout=timeout)
    return process


def celery_housekeeping(
    name: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    hostname: str | None = None,
    loglevel: str = "INFO",
    wait: bool = True,
    timeout: float = 60,
    own_group: bool = False,
) -> Process:
    """The Procfile's ``housekeeping`` line: a worker of its own for the reaper, re-queue and
    retention (the ``housekeeping`` queue, which no job worker consumes); ``wait``: until it logs
    `` ready.`` (at INFO)."""
    command = procfile_command("housekeeping", "--without-mingle", "--without-gossip")
    housekeeping_env = process_env(env, HOUSEKEEPING_NAME=hostname or name, LOG_LEVEL=loglevel)
    return _celery_process(
        name, command, housekeeping_env, log_dir=log_dir, wait=wait, timeout=timeout, own_group=own_group
    )


def celery_beat(
    name: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    schedule_file: Path | None = None,
    loglevel: str = "INFO",
    wait: bool = True,
    timeout: float = 60,
    own_group: bool = False,
) -> Process:
    """Celery beat from the Procfile's ``beat`` line; ``schedule_file``: the file scheduler on
    that file instead of the database one."""
    extra = ["-S", "celery.beat:PersistentScheduler", "-s", str(schedule_file)] if schedule_file else []
    beat = Process(
        name, procfile_command("beat", *extra), env=process_env(env, LOG_LEVEL=loglevel),
        log_path=log_dir / f"{name}.log", own_group=own_group,
    )  # fmt: skip
    if wait:
        beat.wait_for_log("beat: Starting", timeout=timeout)
    return beat
