"""The Procfile's commands, so tests start processes exactly as a deployment does."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def web_command() -> list[str]:
    """The Procfile's ``web`` line for ``subprocess`` (``HOST`` and ``PORT`` from the environment).

    ``exec`` puts uvicorn in the shell's place, so signals sent to the process reach uvicorn itself.
    """
    return ["sh", "-c", "exec " + procfile()["web"]]
