"""`make run` (scripts/run.py) for real: it keeps the app up when one of its processes dies
(saying so, with a growing delay while a process keeps crashing), its console is quiet while
nothing happens, and Ctrl-C stops it warmly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.harness import Process, free_port, process_env
from scripts.run import Supervised
from tests.conftest import ROOT
from tests.system.stack import wait_until


def test_a_process_that_keeps_crashing_is_restarted_with_a_growing_delay_and_said_so(tmp_path: Path):
    """Pass: each exit is announced with its status and the delay before the restart; the delay
    doubles up to its cap; each start logs to its own file."""
    said: list[str] = []

    def start(n: int) -> Process:
        return Process(f"crash-{n}", ["sh", "-c", "exit 3"], log_path=tmp_path / f"crash-{n}.log")

    crashing = Supervised("crash", start, say=said.append, first_delay=0.1, max_delay=0.4)
    deadline = time.monotonic() + 10
    while crashing.starts < 5:
        assert time.monotonic() < deadline, said
        crashing.check()
        time.sleep(0.01)
    crashing.process.stop()

    exits = [line for line in said if "exited" in line]
    assert exits[:4] == [
        "crash exited (3); restarting it in 0.1 s",
        "crash exited (3); restarting it in 0.2 s",
        "crash exited (3); restarting it in 0.4 s",
        "crash exited (3); restarting it in 0.4 s",
    ]
    assert "crash restarted (start 2, pid" in said[1]
    assert {p.name for p in tmp_path.iterdir()} == {f"crash-{n}.log" for n in range(1, 6)}


def _children(pid: int) -> dict[int, str]:
    """The direct children of ``pid``: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


@pytest.mark.django_db(transaction=True)  # make run creates its demo login: flushed afterwards
def test_make_run_restarts_a_killed_worker_stays_quiet_and_stops_warmly_on_ctrl_c(server_env):
    """Pass: `make run` prints its banner; with the reaper every second, its console shows no
    housekeeping or beat line for several seconds; a SIGKILLed worker is announced and started
    again; SIGINT (Ctrl-C) stops every process it started and it exits 0."""
    var = Path(os.environ["RUNBOARD_VAR_DIR"]) / "make-run"
    env = {
        **server_env,
        "RUNBOARD_VAR_DIR": str(var),  # its logs and files apart from any other `make run`
        "PORT": str(free_port()),
        "RUNBOARD_REAPER_INTERVAL": "1",
        "WORKER_CONCURRENCY": "1",
    }
    env.pop("LOG_LEVEL", None)
    var.mkdir(parents=True, exist_ok=True)
    log_path = var / "console.log"
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "scripts/run.py"], cwd=ROOT, env=process_env(env), stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    console = log_path.read_text
    started: dict[int, str] = {}
    try:
        wait_until(lambda: "Runboard is up" in console(), timeout=90, message="make run never came up")
        started = _children(run.pid)
        assert len(started) == 4, started
        time.sleep(2)  # the end of the start-up banners
        quiet_from = len(console())
        time.sleep(4)  # four reaper passes
        lines = console()[quiet_from:].splitlines()
        assert not [line for line in lines if line.startswith(("beat", "housekeeping"))], lines
        assert "Task jobs.reap_stale_jobs" not in console()  # nor on the job worker: not its queue

        [worker] = [pid for pid, cmd in started.items() if "-Q default" in cmd]
        readies = console().count(" ready.")
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: "worker restarted" in console(), timeout=20, message=console()[-3000:])
        assert "worker exited (-9); restarting it in 1 s" in console()
        wait_until(
            lambda: len(_children(run.pid)) == 4, timeout=10, message="the worker was not started again"
        )
        started = _children(run.pid)
        # The new worker up (its " ready." line) before Ctrl-C: this tests a warm
        # stop of what runs, not a stop racing a Celery worker's boot (in CI's PostgreSQL pass,
        # under load, the SIGINT right after the restart once took over 60 s to end everything).
        wait_until(lambda: console().count(" ready.") > readies, timeout=60, message=console()[-3000:])

        run.send_signal(signal.SIGINT)
        try:
            code = run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run did not stop within 60 s of Ctrl-C:\n{console()[-3000:]}")
        assert code == 0, console()[-3000:]
        assert not any(Path(f"/proc/{pid}").exists() for pid in started), console()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in started:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
