"""Shared by every benchmark: machine description and writing a results section.

Each benchmark writes bench/results/<name>.md (date, machine, versions, figures); `make bench`
runs them all. Compare ratios measured in one run: the machine is shared and has 2 cores.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
    for package in ("Django", "channels", "channels-redis", "celery", "redis"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": mem,
        "python": sys.version.split()[0],
        "versions": ", ".join(versions),
    }


def summarize(samples: Sequence[float]) -> str:
    """Median with the spread (min-max) of several runs."""
    if len(samples) == 1:
        return f"{samples[0]:.4g}"
    return (
        f"{statistics.median(samples):.4g} (min {min(samples):.4g}, max {max(samples):.4g}, n={len(samples)})"
    )


def write_results(name: str, title: str, body: str) -> Path:
    info = machine_info()
    header = (
        f"## {title}\n\n"
        f"- Date: {info['date']}\n- Machine: {info['cpu']}, {info['memory']}\n"
        f"- Python {info['python']}; {info['versions']}\n"
        f"- Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`\n\n"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(header + body.rstrip() + "\n")
    return path
