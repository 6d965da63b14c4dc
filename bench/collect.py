"""Gather bench/results/*.md into bench/RESULTS.md (what `make bench` ends with).

    .venv/bin/python -m bench.collect [--results-dir DIR] [--out FILE]

RESULTS.md gets: when and on what it was collected (CPU count and model, memory, versions), a
summary table of every scenario's target against the measured figure (from the machine-readable
summary block each results file ends with, see bench/common.py), the list of source files with
their own dates, then every results file as its own section. Whatever results files exist are
used; a scenario no file reports on is listed as not measured.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from bench import common

# The scenarios (#8), in order, with their targets as the issue states them.
SCENARIOS = {
    1: ("Transport latency", "p50 <= 1.5x and p99 <= 2x the bare Channels ceiling; 100% delivered"),
    2: ("Staleness", "p99 <= 120 ms; final state within 50 ms of the job's end; 100% final-state delivery"),
    3: ("Worker cost", "`ctx.progress()` <= 1 us amortized; <= 1% slowdown at 1 ms/item; vs celery-progress"),
    4: ("Broadcast fan-out", "1,000 online users: last receipt <= 2 s after launch, zero loss"),
    5: (
        "Server cost",
        "CPU per delivered message <= 1.2x the ceiling's; 100 watchers >= 10x cheaper than polling",
    ),
    6: (
        "Memory and connections",
        "<= 40 KiB RSS per idle socket at 5,000; 1,000 simultaneous connects within 3 s",
    ),
    7: ("Job throughput", "1,000 zero-step jobs end to end >= 0.5x the bare Celery no-op rate"),
    8: ("Work throughput", "`csv_profile` MB/s on 100 MB with flat memory; `primes` < 10^9, 1 vs 2 workers"),
    14: (
        "Fair admission",
        "a user with nothing running starts at the next free slot; jobs per second must not drop",
    ),
    15: ("Reads at scale", "each read at 1,000,000 jobs within 1.5x of its time at 1,000 (PostgreSQL)"),
    17: (
        "Scale-out",
        "4 web processes, 10,000 sockets: all signed in, a broadcast lost by none; per-process memory and "
        "CPU; a Redis shard's and PostgreSQL's figures for the 1,000,000-socket plan (docs/scaling.md)",
    ),
}
OUT = Path(__file__).resolve().parent / "RESULTS.md"
# Which scenarios a results file covers, for files written without a summary block.
FILE_SCENARIOS = {
    "transport": [1, 2], "transport-core": [1, 2], "progress_overhead": [3], "fanout": [4],
    "server_cost": [5], "sockets_memory": [6], "throughput": [7], "csv_profile": [8], "primes_scaling": [8],
    "admission": [14], "asgi_servers": [6], "history": [15], "scale_out": [17], "layer_throughput": [17],
    "db_statements": [17],
}  # fmt: skip


def rows_from_tables(name: str, text: str) -> list[dict[str, Any]]:
    """For a results file without a summary block: the rows of its tables that carry a verdict
    (a "Met?" column saying met / not met), so the summary table still lists them."""
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: ") or "Met?" not in header or "Target" not in header:
            continue
        met_cell = cells[header.index("Met?")].strip("* ").lower() if len(cells) == len(header) else ""
        if met_cell not in ("met", "not met"):
            continue
        target_at = header.index("Target")
        first = 2 if header[1].lower() in ("metric", "figure") else 1
        metric = cells[0] if first == 1 else f"{cells[0]}: {cells[1]}"
        measured = "; ".join(
            f"{label}: {value}" if len(header[first:target_at]) > 1 else value
            for label, value in zip(header[first:target_at], cells[first:target_at], strict=True)
            if value
        )
        numbers = FILE_SCENARIOS.get(name, [])
        if len(numbers) > 1:
            number = numbers[1] if re.search(r"stale|final state", metric, re.IGNORECASE) else numbers[0]
        else:
            number = numbers[0] if numbers else None
        scenario = (
            f"{number}. {SCENARIOS[number][0]}" if number in SCENARIOS else TABLE_ONLY_NAMES.get(name, name)
        )
        rows.append({"scenario": scenario, "metric": metric, "target": cells[target_at],
                     "measured": measured, "met": met_cell == "met"})  # fmt: skip
    return rows


# Runs of an alternative we measured to decide against it (the default channel layer): their
# sections are kept, their rows stay out of the summary's verdicts.
COMPARISON_ONLY = {"transport-core"}

# Results files outside the eight scenarios, by the name the summary table gives them.
TABLE_ONLY_NAMES = {"load": "Load (issue 7)"}


def scenario_number(text: str) -> int | None:
    m = re.match(r"\s*(\d+)", str(text))
    return int(m.group(1)) if m else None


def strip_summary(text: str) -> str:
    start = text.rfind(common.SUMMARY_OPEN)
    if start < 0:
        return text
    end = text.find(common.SUMMARY_CLOSE, start)
    end = len(text) if end < 0 else end + len(common.SUMMARY_CLOSE)
    return (text[:start] + text[end:]).rstrip() + "\n"


def read_results(results_dir: Path) -> list[dict[str, Any]]:
    files = []
    for path in sorted(results_dir.glob("*.md")):
        text = path.read_text()
        summary = common.read_summary(text)
        if summary is None and path.stem not in COMPARISON_ONLY:
            rows = rows_from_tables(path.stem, text)
            summary = {"rows": rows, "quick": "Quick run (`--quick`)" in text} if rows else None
        title = next((line[3:].strip() for line in text.splitlines() if line.startswith("## ")), path.stem)
        date = re.search(r"^- Date: (.+)$", text, re.MULTILINE)
        numbers = sorted(
            {n for r in (summary or {}).get("rows", []) if (n := scenario_number(r.get("scenario")))}
        )
        files.append({
            "path": path, "name": path.stem, "text": strip_summary(text), "summary": summary, "title": title,
            "date": date.group(1) if date else "?", "quick": bool(summary and summary.get("quick"))
            or "Quick run (`--quick`)" in text, "numbers": numbers,
        })  # fmt: skip
    files.sort(key=lambda f: (f["numbers"][0] if f["numbers"] else 99, f["name"]))
    return files


def verdict(met: Any) -> str:
    return "met" if met is True else "**not met**" if met is False else "-"


def cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def summary_table(files: list[dict[str, Any]]) -> tuple[list[str], int, int]:
    lines = [
        "| # | Scenario | Metric | Target | Measured | Met? | Source |",
        "|---|---|---|---|---|---|---|",
    ]
    met = judged = 0
    rows_by_number: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    unnumbered = []
    for f in files:
        for r in (f["summary"] or {}).get("rows", []):
            n = scenario_number(r.get("scenario"))
            (rows_by_number.setdefault(n, []) if n is not None else unnumbered).append((f, r))
    for n in sorted(set(SCENARIOS) | set(rows_by_number)):
        name = SCENARIOS.get(n, ("?", ""))[0]
        entries = rows_by_number.get(n, [])
        if not entries:
            covering = [f for f in files if n in FILE_SCENARIOS.get(f["name"], [])]
            found = ", ".join(f"[{f['name']}](#{anchor(f['title'])})" for f in covering)
            measured = "see its section (no summary block)" if covering else "not measured"
            lines.append(f"| {n} | {name} | - | {cell(SCENARIOS[n][1])} | {measured} | - | {found or '-'} |")
            continue
        for f, r in entries:
            measured = cell(r.get("measured", ""))
            if f["quick"]:
                measured += " (quick run)"
            if r.get("met") is not None:
                judged += 1
                met += r.get("met") is True
            label = cell(str(r.get("scenario", "")).split(".", 1)[-1].strip() or name)
            lines.append(
                f"| {n} | {label} | {cell(r.get('metric', ''))} | {cell(r.get('target', ''))} | {measured} "
                f"| {verdict(r.get('met'))} | [{f['name']}](#{anchor(f['title'])}) |"
            )
    for f, r in unnumbered:
        lines.append(
            f"| - | {cell(r.get('scenario', ''))} | {cell(r.get('metric', ''))} "
            f"| {cell(r.get('target', ''))} | {cell(r.get('measured', ''))} | {verdict(r.get('met'))} "
            f"| [{f['name']}](#{anchor(f['title'])}) |"
        )
    return lines, met, judged


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def build(results_dir: Path) -> str:
    files = read_results(results_dir)
    info = common.machine_info()
    table, met, judged = summary_table(files)
    quick = [f["name"] for f in files if f["quick"]]
    head = [
        "# Runboard benchmark results",
        "",
        f"Collected {info['date']} by `python -m bench.collect` from `bench/results/`; `make bench` reruns "
        "every scenario and collects again (how each is measured, and how to read this file: "
        "[bench/README.md](README.md)).",
        "",
        f"- Machine: {info['cpu']} ({os.cpu_count()} CPUs), {info['memory']} of memory",
        f"- Python {info['python']}; {info['versions']}",
        "- All processes (Redis, web server, workers, clients) on this one machine; figures are the median "
        "of several runs with their spread (min, max), the project and its baselines interleaved in each "
        "run.",
        "",
    ]
    if quick:
        head += [
            f"**Quick runs (`--quick`) among the sources ({', '.join(quick)}): smoke tests, not figures to "
            "quote.**",
            "",
        ]
    head += [
        "## Summary",
        "",
        f"{met} of {judged} targets met." if judged else "No targets judged yet.",
        "",
        *table,
        "",
        "Sources (each section below says when and how it was measured):",
        "",
        "| File | Section | Date | Quick run? |",
        "|---|---|---|---|",
        *(
            f"| `results/{f['path'].name}` | [{cell(f['title'])}](#{anchor(f['title'])}) | {f['date']} "
            f"| {'yes' if f['quick'] else 'no'} |"
            for f in files
        ),
        "",
    ]
    missing = [f["name"] for f in files if f["summary"] is None]
    if missing:
        head += [f"Results without a summary block (not in the table): {', '.join(missing)}.", ""]
    body = "\n".join(f["text"].rstrip() + "\n" for f in files)
    return "\n".join(head) + "\n" + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results-dir", default=os.environ.get("BENCH_RESULTS_DIR") or str(common.RESULTS_DIR)
    )
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    out = Path(args.out)
    out.write_text(build(Path(args.results_dir)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
