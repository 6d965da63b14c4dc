"""The jobs app's settings, each with its default, type and meaning (issue 13).

Read them as ``app_settings.NAME``: each is a ``Setting`` (declared once: its default, which
gives its type, and its meaning) that reads the Django setting ``RUNBOARD_<NAME>`` when accessed
(so ``override_settings`` works), or falls back to the default, so the app runs in a project whose
settings define none of them. Runboard's own settings set one only when the environment variable
of the same name is set (``settings_from_environment``). docs/settings.md lists them all.
"""

from __future__ import annotations

from pathlib import Path

from dashboard.conf import Setting

# Where a checkout keeps its local state by default (dashboard/settings/base.py's BASE_DIR / "var").
_DEFAULT_VAR_DIR = Path(__file__).resolve().parent.parent / "var"


class JobsSettings:
    """``RUNBOARD_*`` settings read by jobs/ (and by apps above it: dashboard/, frontend/)."""

    # --- Job kinds and time limits ---------------------------------------------------------------
    KIND_MODULES = Setting[list[str]](
        [], "Dotted module names imported at startup to register a deployment's own job kinds."
    )

    LAUNCH_PANEL_KIND = Setting(
        "simulate",
        "The kind whose form the dashboard's launch panel opens on (if the user may launch it; "
        "else the first by title).",
    )

    MAX_JOB_TIME_LIMIT = Setting(
        3600, "Seconds: the longest hard time limit a kind may declare (broker timeout +600 s, design.md §6)."
    )

    # --- Progress coalescing (design.md §3.3) ----------------------------------------------------
    PUSH_INTERVAL = Setting(0.1, "Seconds: at most one live progress push per job per this interval.")

    HEARTBEAT_INTERVAL = Setting(
        1.0, "Seconds: at most one database write of a job's progress per this interval."
    )

    HEARTBEAT_MAX_SILENCE = Setting(
        5.0, "Seconds: a running job writes a heartbeat at least this often, even when it reports nothing."
    )

    LOG_LINES_KEPT = Setting(1000, "Lines: the newest log lines kept per job (older ones are deleted).")

    # --- Lost workers and lost messages (the reaper) ---------------------------------------------
    STALE_AFTER = Setting(
        30.0, "Seconds: a running job whose heartbeat is older than this has lost its worker."
    )

    REAPER_INTERVAL = Setting(
        10.0, "Seconds between runs of the reaper (``jobs.reap_stale_jobs``) in the beat schedule."
    )

    REQUEUE_AFTER = Setting(
        600.0, "Seconds: a queued job with no sign of its broker message for this long is enqueued again."
    )

    # --- Fairness --------------------------------------------------------------------------------
    MAX_RUNNING_PER_USER = Setting(2, "Jobs: running jobs per user; the user's other jobs wait queued.")

    ADMISSION_CONTROL = Setting(
        True,
        "Whether the fair scheduler holds jobs in the database (jobs.admission); False hands every job to "
        "the broker at launch, first come first served, as before issue 14 (benchmarks, an escape hatch).",
    )

    MAX_ADMITTED = Setting(
        0,
        "Jobs: admitted (running or handed to a worker) at once over all users; 0: no global limit "
        "beyond the per-user ones (size it to the worker slots to hold work back in the database).",
    )

    ADMIT_AHEAD_PER_USER = Setting(
        1,
        "Jobs: a user's admitted jobs waiting in one queue for a worker; one keeps the broker's line "
        "round-robin across users (a user with nothing running is next at the next free slot).",
    )

    LAUNCHES_PER_MINUTE = Setting(
        30, "Jobs: launches per user per minute; more are refused with HTTP 429 and Retry-After."
    )

    # --- Files and sizes -------------------------------------------------------------------------
    PRIVATE_DIR = Setting(
        _DEFAULT_VAR_DIR / "private",
        "Directory of uploads and result files (never served directly); shared by web and workers.",
    )

    UPLOAD_MAX_BYTES = Setting(100 * 1024 * 1024, "Bytes: the largest upload accepted (100 MiB).")

    RESULT_MAX_BYTES = Setting(
        16 * 1024 * 1024,
        "Bytes of compact JSON: the largest result a job may store (16 MiB); a larger one fails the job.",
    )

    # --- Schedules -------------------------------------------------------------------------------
    SCHEDULE_MIN_SECONDS = Setting(
        60,
        "Seconds: the shortest interval a schedule may be given (a crontab fires at most once a minute); "
        "beat's runs are counted in RUNBOARD_LAUNCHES_PER_MINUTE but not refused by it, Run now is.",
    )

    SCHEDULES_PER_OWNER = Setting(
        10,
        "Schedules: the most one user may own (with RUNBOARD_SCHEDULE_MIN_SECONDS, what bounds the jobs "
        "their schedules launch: 10 a minute).",
    )

    SCHEDULE_FAILURES_NOTIFY = Setting(
        3, "Runs: a schedule whose runs failed this many times in a row notifies its owner (once per streak)."
    )

    # --- Retention -------------------------------------------------------------------------------
    RESULT_FILE_RETENTION_DAYS = Setting(
        7.0, "Days: produced result files (exports) are deleted this long after they were written."
    )

    JOB_RETENTION_DAYS = Setting(
        90.0, "Days: finished jobs (with their logs, chunks, uploads and files) are deleted after this."
    )

    NOTIFICATION_RETENTION_DAYS = Setting(
        90.0, "Days: read notifications are deleted after this (unread ones stay); by jobs' retention task."
    )


app_settings = JobsSettings()
