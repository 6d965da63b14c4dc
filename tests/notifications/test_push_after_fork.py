"""A process that forks right after it first published still publishes from the child.

The Celery worker's main process does exactly this: when a pool process dies mid-job, it ends
the job (publishing the change, its first publish ever) and at once forks the replacement pool
process, which then runs the re-queued job. If the fork lands while the parent's publisher
thread is importing the channel layer's backend, the child inherits that module's import lock
held by a thread it does not have, and every publish of the child hangs for ever: the job runs,
the database is right, and its owner hears nothing (CI, test_faults: a re-run job shown
`queued` for 20 s after it had succeeded).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import django
    django.setup()
    from notifications import push

    push.push_event(group="jobs.first", event={"type": "ping"})
    time.sleep(0.2)  # the parent's first publish is under way
    child = os.fork()
    if child == 0:
        push.push_event(group="jobs.second", event={"type": "ping"})
        os._exit(0 if push.flush(timeout=5) else 3)
    _, status = os.waitpid(child, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_child_forked_during_the_first_publish_can_publish(tmp_path):
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="dashboard.settings.test",
        # Publishing asks the connection whether it autocommits, which connects: a database of
        # its own (the suite's may be a PostgreSQL test database this process cannot name).
        DATABASE_URL=f"sqlite:///{tmp_path / 'fork.sqlite3'}",
        CHANNEL_LAYER_BACKEND="tests.notifications.slow_import_layer.SlowImportLayer",
        PYTHONPATH=str(ROOT),
    )
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"the child could not publish: {run.stdout}{run.stderr}"
