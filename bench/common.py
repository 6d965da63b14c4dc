"""Shared by every benchmark: machine description and writing a results section.

Each benchmark writes bench/results/<name>.md (date, machine, versions, figures); `make bench`
runs them all and ``python -m bench.collect`` gathers them into bench/RESULTS.md. Compare ratios
measured in one run: the machine is shared and has 2 cores.

A results file may carry a machine-readable summary, which collect.py turns into the summary
table at the top of RESULTS.md: pass ``summary=[row(...), ...]`` to ``write_results``. Each row is
``{scenario, metric, target, measured, met}``; ``scenario`` starts with the issue's scenario number
("3. Worker cost"), so collect can order rows; ``met`` is True, False or None (no target, or not
comparable). The block is an HTML comment at the end of the file (invisible when rendered)::

    <!-- bench-summary
    {"name": ..., "quick": false, "rows": [...]}
    -->
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUMMARY_OPEN = "<!-- bench-summary"
SUMMARY_CLOSE = "-->"


VERSIONED = (
    "Django", "channels", "channels-redis", "celery", "redis", "uvicorn", "websockets",
    "celery-progress",
)  # fmt: skip


def is_quick() -> bool:
    """True when the running script was given ``--quick`` (a smoke run, not a figure to quote)."""
    return "--quick" in sys.argv[1:]


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    versions = []
    for package in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": mem,
        "python": sys.version.split()[0],
        "versions": ", ".join(versions),
    }


def summarize(samples: Sequence[float], spec: str = ".4g") -> str:
    """Median with the spread (min-max) of several runs; ``spec`` formats each number."""
    if len(samples) == 1:
        return f"{samples[0]:{spec}}"
    med, low, high = statistics.median(samples), min(samples), max(samples)
    return f"{med:{spec}} (min {low:{spec}}, max {high:{spec}}, n={len(samples)})"


def row(scenario: str, metric: str, target: str, measured: str, met: bool | None) -> dict[str, Any]:
    """One line of the RESULTS.md summary table (see the module docstring)."""
    return {"scenario": scenario, "metric": metric, "target": target, "measured": measured, "met": met}


def summary_block(name: str, rows: Iterable[dict[str, Any]]) -> str:
    rows = [dict(r) for r in rows]
    for r in rows:
        missing = {"scenario", "metric", "target", "measured", "met"} - set(r)
        if missing:
            raise ValueError(f"summary row {r!r} lacks {sorted(missing)}")
    data = {"name": name, "quick": is_quick(), "date": machine_info()["date"], "rows": rows}
    # "--" must not appear inside an HTML comment; JSON escapes it harmlessly.
    text = json.dumps(data, indent=1, default=str).replace("--", "-\\u002d")
    return f"{SUMMARY_OPEN}\n{text}\n{SUMMARY_CLOSE}\n"


def read_summary(text: str) -> dict[str, Any] | None:
    """The summary block of a results file's text, or None if it has none (or a broken one)."""
    start = text.rfind(SUMMARY_OPEN)
    if start < 0:
        return None
    end = text.find(SUMMARY_CLOSE, start + len(SUMMARY_OPEN))
    if end < 0:
        return None
    try:
        data = json.loads(text[start + len(SUMMARY_OPEN) : end])
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else None


def write_results(name: str, title: str, body: str, summary: Iterable[dict[str, Any]] | None = None) -> Path:
    """Write bench/results/<name>.md (or under a RESULTS_DIR a caller set): header, body and,
    when given, the machine-readable summary block collect.py reads."""
    info = machine_info()
    quick = "- **Quick run (`--quick`): a smoke test, not figures to quote.**\n" if is_quick() else ""
    header = (
        f"## {title}\n\n"
        f"- Date: {info['date']}\n- Machine: {info['cpu']}, {info['memory']}\n"
        f"- Python {info['python']}; {info['versions']}\n"
        f"- Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`\n{quick}\n"
    )
    text = header + body.rstrip() + "\n"
    if summary is not None:
        text += "\n" + summary_block(name, summary)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text)
    return path
