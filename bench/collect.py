"""Gather bench/results/*.md into bench/RESULTS.md (what `make bench` ends with)."""

from __future__ import annotations

from pathlib import Path

from bench.common import RESULTS_DIR, machine_info

ORDER = ["progress_overhead", "csv_profile", "primes_scaling"]


def main() -> None:
    parts = sorted(
        RESULTS_DIR.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem)
    )
    info = machine_info()
    head = (
        "# Runboard benchmark results\n\n"
        f"Collected {info['date']} on {info['cpu']}, {info['memory']}. Each section below says when and how "
        "it was measured; `make bench` reruns them all (see bench/README.md).\n\n"
    )
    body = "\n".join(part.read_text().replace("\n## ", "\n### ").replace("## ", "## ", 1) for part in parts)
    out = Path(__file__).resolve().parent / "RESULTS.md"
    out.write_text(head + body)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
