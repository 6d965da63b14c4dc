#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import signal
import sys


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    # SIGTERM is a normal exit, so atexit handlers run: among them the flush of events a command
    # published (notifications/push.py), which would otherwise die with the process.
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)  # the operator's SSH session dropped
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
