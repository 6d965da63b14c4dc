"""Throughput and memory of jobs.kinds.csv_profile.profiler.profile_csv on a generated mixed CSV,
against pandas, pyarrow and csv-module baselines in the same run (issue 15 §1 and §6).

    .venv/bin/python bench/csv_profile.py [--size-mb 100] [--runs 3]

Generates a deterministic 8-column CSV (integer id, float amount, date, boolean, low-cardinality
category, high-cardinality customer, free text with quotes and commas, small integer score) of the
requested size and one 10x smaller, in a temporary directory that is deleted afterwards. Each run
profiles the large file with Runboard and each baseline, and the small one with Runboard, each in a
fresh subprocess (the order rotating every run), which reports its wall time and peak RSS
(``ru_maxrss``), so the peak RSS of the small and the large file can be compared: it should not grow
with the file. The baselines compute the same statistics less the boolean/date typing, with exact
distinct counts (see their docstrings). pandas is a benchmark-only dependency (bench/requirements.txt).
MB = 10^6 bytes. Writes bench/results/csv_profile.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row, summarize, write_results  # noqa: E402

CATEGORIES = ["retail"] * 6 + ["wholesale"] * 3 + ["online"] * 4 + ["partner", "internal", "refund", "other"]
WORDS = [
    "the",
    "order",
    "was",
    "shipped",
    "late",
    "and",
    "the",
    "customer",
    "called",
    "twice",
    "about",
    "a",
    "missing",
    "item",
    "from",
    "warehouse",
    "north",
    "invoice",
    "paid",
    "in",
    "full",
    "please",
    "check",
    "label",
    "damaged",
    "box",
    "replaced",
    "at",
    "no",
    "cost",
]
EPOCH = dt.date(2015, 1, 1)


def generate(path: Path, size_bytes: int, seed: int = 20240601) -> int:
    """Write a CSV of at least ``size_bytes`` bytes; returns its data row count."""
    rnd = random.Random(seed)
    random_, randrange, choice = rnd.random, rnd.randrange, rnd.choice
    dates = [(EPOCH + dt.timedelta(days=day)).isoformat() for day in range(3653)]
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "amount", "date", "active", "category", "customer", "note", "score"])
        while out.tell() < size_bytes:
            block = []
            for _ in range(5000):
                rows += 1
                words = [choice(WORDS) for _ in range(3 + randrange(7))]
                if random_() < 0.3:
                    words.insert(1, '"quoted",')
                if random_() < 0.2:
                    words.append(f"ref {randrange(1_000_000)}")
                block.append(
                    (
                        rows,
                        f"{random_() * 5000 - 500:.2f}",
                        dates[randrange(3653)],
                        "true" if random_() < 0.7 else "false",
                        choice(CATEGORIES),
                        f"cust-{randrange(300_000):06d}",
                        " ".join(words) if random_() < 0.95 else "",
                        randrange(101),
                    )
                )
            writer.writerows(block)
    return rows


# What each implementation is, for the results table.
IMPLEMENTATIONS = {
    "runboard": "Runboard `profile_csv` (Arrow reader, vectorized typing, sketches past 10,000 distinct)",
    "pandas": "pandas `read_csv(dtype=str, chunksize=200,000)` + the same statistics",
    "pyarrow": "pyarrow `csv.open_csv` (strings, 16 MiB blocks) + `pyarrow.compute`",
    "csv": "Python's csv module + the same statistics in Python",
}
BASELINES = ("pandas", "pyarrow", "csv")
EMPTY = ["", "NA", "N/A", "n/a", "NULL", "null", "None"]


def _setup_django() -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.test")
    django.setup()


def child(path: str, implementation: str) -> None:
    """Profile one file in this fresh process and print timings and peak RSS as JSON.

    Libraries are imported, and each implementation run once on a tiny file, before the clock starts:
    a worker process pays that once in its life, not per job (the first-call cost is printed apart)."""
    warm = Path(path).with_name("warm.csv")
    started = time.perf_counter()
    run: Callable[[str], dict]
    if implementation == "runboard":
        _setup_django()
        from jobs.kinds.csv_profile.profiler import profile_csv

        def runboard(file: str) -> dict:
            with open(file, "rb") as stream:
                result = profile_csv(stream)
            return {
                "bytes": result["bytes"],
                "rows": result["rows"],
                "columns": [
                    {key: column[key] for key in ("name", "type", "distinct", "distinct_exact")}
                    for column in result["columns"]
                ],
            }

        run = runboard
    else:
        run = {"pandas": baseline_pandas, "pyarrow": baseline_pyarrow, "csv": baseline_csv}[implementation]
    run(str(warm))
    first_call = time.perf_counter() - started
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = run(path)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime  # all threads
    peak_kb = after.ru_maxrss
    print(json.dumps({**result, "seconds": seconds, "cpu": cpu, "first_call": first_call,
                      "baseline_kb": baseline_kb, "peak_kb": peak_kb}))  # fmt: skip


def _numpy_stats(values, weights) -> dict:
    """min/max/mean/sample stddev of float64 ``values`` counted ``weights`` times (NumPy arrays)."""
    n = int(weights.sum())
    mean = float((values * weights).sum()) / n
    m2 = float((weights * (values - mean) ** 2).sum())
    stddev = math.sqrt(m2 / (n - 1)) if n > 1 else None
    return {"min": float(values.min()), "max": float(values.max()), "mean": mean, "stddev": stddev}


def _numeric_stats(values: list[float], weights: list[int]) -> dict:
    n = sum(weights)
    mean = math.fsum(v * w for v, w in zip(values, weights, strict=True)) / n
    m2 = math.fsum(w * (v - mean) ** 2 for v, w in zip(values, weights, strict=True))
    return {
        "min": min(values),
        "max": max(values),
        "mean": mean,
        "stddev": math.sqrt(m2 / (n - 1)) if n > 1 else None,
    }


def baseline_pandas(path: str) -> dict:
    """pandas: chunks of strings; per column stripped values, empties, exact value counts (merged once
    at the end), then the numeric ones' min/max/mean/stddev and the top 5. No boolean/date typing."""
    import numpy as np
    import pandas as pd

    chunks: dict[str, list[pd.Series]] = {}
    empty: dict[str, int] = {}
    rows = 0
    for chunk in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=200_000):
        rows += len(chunk)
        for name in chunk.columns:
            stripped = chunk[name].str.strip()
            blank = stripped.isin(EMPTY)
            empty[name] = empty.get(name, 0) + int(blank.sum())
            chunks.setdefault(name, []).append(stripped[~blank].value_counts())
    # One merge at the end (merging chunk by chunk is quadratic in the distinct values).
    counts = {name: pd.concat(parts).groupby(level=0).sum() for name, parts in chunks.items()}
    columns = []
    for name, counted in counts.items():
        numbers = pd.to_numeric(counted.index.to_series(), errors="coerce")
        kind = "string"
        if len(numbers) and numbers.notna().all():
            weights = counted.to_numpy(dtype=np.int64)
            _numpy_stats(numbers.to_numpy(dtype=np.float64), weights)
            kind = "number"
        counted.nlargest(5)
        columns.append({"name": name, "type": kind, "distinct": len(counted), "distinct_exact": True})
    return {"bytes": Path(path).stat().st_size, "rows": rows, "columns": columns}


def baseline_pyarrow(path: str) -> dict:
    """pyarrow: streaming reader, strings; per column trim, empties, value counts (merged once at the end
    by a group-by), then numeric stats on the distinct values and the top 5. No boolean/date typing."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    with open(path, "rb") as stream:
        names = stream.readline().decode().rstrip("\r\n").split(",")
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=16 << 20),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False
        ),
    )
    parts: dict[str, list[pa.Table]] = {name: [] for name in names}
    empty = dict.fromkeys(names, 0)
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        for name, cells in zip(names, batch.columns, strict=True):
            stripped = pc.utf8_trim_whitespace(cells)
            blank = pc.is_in(stripped, value_set=pa.array(EMPTY))
            empty[name] += pc.sum(blank).as_py() or 0
            counted = pc.value_counts(pc.filter(stripped, pc.invert(blank)))
            parts[name].append(pa.table({"v": counted.field(0), "n": counted.field(1)}))
    # One merge at the end (merging batch by batch is quadratic in the distinct values).
    tables = {
        name: pa.concat_tables(tables).group_by("v").aggregate([("n", "sum")]).rename_columns(["v", "n"])
        for name, tables in parts.items()
    }
    columns = []
    for name, table in tables.items():
        kind = "string"
        try:
            numbers = pc.cast(table.column("v"), pa.float64())
        except pa.ArrowInvalid:
            pass
        else:
            _numpy_stats(numbers.to_numpy(), table.column("n").to_numpy())
            kind = "number"
        table.sort_by([("n", "descending")]).slice(0, 5)
        columns.append({"name": name, "type": kind, "distinct": table.num_rows, "distinct_exact": True})
    return {"bytes": Path(path).stat().st_size, "rows": rows, "columns": columns}


def baseline_csv(path: str) -> dict:
    """Python's csv module: Counters of stripped values per column, then float() typing and stats on
    the distinct values and the top 5. No boolean/date typing."""
    from collections import Counter

    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        names = next(reader)
        counters: list[Counter[str]] = [Counter() for _ in names]
        rows = 0
        for record in reader:
            rows += 1
            for counter, value in zip(counters, record, strict=True):
                counter[value.strip()] += 1
    columns = []
    for name, counter in zip(names, counters, strict=True):
        for token in EMPTY:
            counter.pop(token, None)
        kind = "string"
        try:
            numbers = [float(value) for value in counter]
        except ValueError:
            pass
        else:
            _numeric_stats(numbers, list(counter.values()))
            kind = "number"
        counter.most_common(5)
        columns.append({"name": name, "type": kind, "distinct": len(counter), "distinct_exact": True})
    return {"bytes": Path(path).stat().st_size, "rows": rows, "columns": columns}


def run_child(path: Path, implementation: str) -> dict:
    completed = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(path),
            "--implementation",
            implementation,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def mbs(run: dict) -> float:
    return run["bytes"] / 1e6 / run["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-mb", type=float, default=100.0, help="size of the large file, in MB (10^6 bytes)"
    )
    parser.add_argument("--runs", type=int, default=3, help="profiling runs per file and implementation")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 MB (and 1 MB), 2 runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--implementation", default="runboard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.runs = 10.0, 2
    if args.child:
        child(args.child, args.implementation)
        return

    large_bytes = int(args.size_mb * 1_000_000)
    sizes = [("small", large_bytes // 10), ("large", large_bytes)]
    # Runboard on both files (memory must not grow with the file); the baselines on the large one.
    jobs = [("runboard", "small"), ("runboard", "large")] + [(name, "large") for name in BASELINES]
    measured: dict[tuple[str, str], list[dict]] = {job: [] for job in jobs}
    started_all = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="csv-profile-bench-") as tmp:
        paths = {}
        for label, size in sizes:
            path = paths[label] = Path(tmp) / f"{label}.csv"
            started = time.perf_counter()
            rows = generate(path, size)
            print(
                f"{label}: generated {path.stat().st_size / 1e6:.1f} MB, {rows} rows "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        # Past 10,000 distinct values, so that the warm-up takes every path (sketches too).
        generate(Path(tmp) / "warm.csv", 2_000_000)
        # Interleaved, the order rotating every run: load on the shared machine hits all alike.
        for number in range(1, args.runs + 1):
            shift = (number - 1) % len(jobs)
            for job in jobs[shift:] + jobs[:shift]:
                implementation, label = job
                measured[job].append(run_child(paths[label], implementation))
                last = measured[job][-1]
                print(
                    f"  run {number}, {implementation} on {label}: {mbs(last):.1f} MB/s, "
                    f"peak RSS {last['peak_kb'] / 1024:.1f} MiB",
                    flush=True,
                )
    elapsed = time.perf_counter() - started_all
    load_after = os.getloadavg()[0]

    large = measured[("runboard", "large")]
    large_mbs = [mbs(run) for run in large]
    # Ratios within one run: Runboard's MB/s over the baseline's, measured minutes apart at most.
    ratios = {
        name: [mbs(ours) / mbs(theirs) for ours, theirs in zip(large, measured[(name, "large")], strict=True)]
        for name in BASELINES
    }
    lines = [
        "| Implementation | File | Size (MB) | Rows | Throughput (MB/s) | Peak RSS (MiB) | RSS before (MiB) "
        "| Imports + first call (s) | CPU s per 100 MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        runs = measured[job]
        implementation, label = job
        lines.append(
            f"| {IMPLEMENTATIONS[implementation]} | {label} | {runs[0]['bytes'] / 1e6:.1f} "
            f"| {runs[0]['rows']:,} "
            f"| {summarize([mbs(run) for run in runs], '.1f')} "
            f"| {summarize([run['peak_kb'] / 1024 for run in runs], '.0f')} "
            f"| {statistics.median(run['baseline_kb'] / 1024 for run in runs):.0f} "
            f"| {statistics.median(run['first_call'] for run in runs):.2f} "
            f"| {statistics.median(run['cpu'] / run['bytes'] * 1e8 for run in runs):.2f} |"
        )
    small_peak = statistics.median(run["peak_kb"] for run in measured[("runboard", "small")])
    large_peak = statistics.median(run["peak_kb"] for run in large)
    lines += [
        "",
        "Runboard's throughput over each baseline's, run by run (same run, same file):",
        "",
        "| Baseline | Ratio |",
        "|---|---|",
    ]
    for name in BASELINES:
        lines.append(f"| {IMPLEMENTATIONS[name]} | {summarize(ratios[name], '.2f')} |")
    lines += [
        "",
        f"Peak RSS large / small (Runboard): {large_peak / small_peak:.2f} for a 10x larger file (flat "
        "memory: Arrow parses one chunk at a time, with a bounded read-ahead, and each column keeps "
        "bounded state). "
        "The baselines keep exact value counts, so their memory grows with the number of distinct values.",
        "",
        "Columns of the large file as Runboard profiled them (distinct is exact up to 10,000 values, then "
        "estimated):",
        "",
        "| Column | Type | Distinct | Exact |",
        "|---|---|---|---|",
    ]
    for column in large[0]["columns"]:
        lines.append(
            f"| {column['name']} | {column['type']} | {column['distinct']:,} | {column['distinct_exact']} |"
        )
    lines += [
        "",
        f"{args.runs} runs; in each, every implementation profiles its file in a fresh `python` subprocess "
        "(the order rotating every run), reading it from the page cache; throughput = file bytes / wall "
        "time of the profiling call, after the libraries were imported and the implementation ran once on "
        "a 2 MB file (that first call, a once-per-worker-process cost, is the last column); figures are "
        "the median (min, max) over runs. The machine is shared with other work (2 cores): absolute MB/s "
        f"vary from run to run, the ratios less. Generating and measuring took {elapsed:.0f} s; the 1-minute "
        f"load average was {load_before:.1f} before and {load_after:.1f} after.",
    ]
    cpu = statistics.median(run["cpu"] / run["bytes"] * 1e8 for run in large)
    if statistics.median(mbs(run) for run in large) < 100:
        lines += [
            "",
            f"Why the MB/s targets are missed: Runboard's profiling call takes {cpu:.2f} CPU-seconds per "
            "100 MB (Arrow's parse of 8 string columns about a third, the per-column kernels - value "
            "counts, trim, casts, hashes - most of the rest, decoding in the calling thread a tenth), spread "
            "over up to 3 threads; on 2 cores shared with the load above it gets well under 2 of them, so "
            f"the wall time is above the {cpu / 2:.2f} s that 2 idle cores would need (100 MB/s needs 1 s).",
        ]
    body = "\n".join(lines)
    ratio = large_peak / small_peak
    scenario = "8. Work throughput"
    median_mbs = statistics.median(large_mbs)
    summary = [
        row(scenario, f"`csv_profile` throughput on a generated {args.size_mb:g} MB CSV (MB/s), issue 15 §6",
            ">= 100", summarize(large_mbs, ".1f"), median_mbs >= 100),
        row(scenario, f"`csv_profile` throughput on a generated {args.size_mb:g} MB CSV (MB/s), issue 15 §1",
            ">= 50", summarize(large_mbs, ".1f"), median_mbs >= 50),
    ]  # fmt: skip
    for name in BASELINES:
        summary.append(
            row(
                scenario,
                f"`csv_profile` throughput / {name} baseline's, same run (ratio), issue 15 §1",
                ">= 1.0",
                summarize(ratios[name], ".2f"),
                statistics.median(ratios[name]) >= 1.0,
            )
        )
    summary.append(
        row(
            scenario,
            "`csv_profile` peak worker RSS, 10x larger file / smaller file (flat memory)",
            "<= 1.2",
            f"{ratio:.2f} ({large_peak / 1024:.0f} vs {small_peak / 1024:.0f} MiB)",
            ratio <= 1.2,
        )
    )
    path = write_results(
        "csv_profile",
        "CSV profiler: streaming throughput and memory, against baselines",
        body,
        summary=summary,
    )
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
