"""The socket benchmarks still run end to end (``bench/transport.py`` and ``bench/load.py`` with
``--quick``), so the benchmark code cannot rot. They start their own redis-server, uvicorn, Celery
worker and client processes; these tests assert on delivery completeness, never on timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def run_quick(script: str, results_dir: Path) -> dict[str, Any]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "RUNBOARD_KIND_MODULES"}
    }
    proc = subprocess.run(
        [sys.executable, f"bench/{script}.py", "--quick", "--results-dir", str(results_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert (results_dir / f"{script}.md").exists()
    return json.loads((results_dir / f"{script}.json").read_text())


@pytest.mark.timeout(180)
def test_transport_benchmark_delivers_every_message_and_final_state(tmp_path: Path) -> None:
    result = run_quick("transport", tmp_path)
    verdict = result["verdict"]
    assert verdict["delivery"], "no transport case ran"
    for case in verdict["delivery"]:
        assert case["p"] == 1.0, case  # Runboard: every pushed message reached its socket
        assert case["c"] == 1.0, case  # the ceiling too
    assert verdict["staleness_final_delivery"] == 1.0
    # The real path (a worker's ctx.progress() to the socket): every job ran, its final state arrived.
    assert verdict["real_path"], "no real-path job ran"
    for rate in verdict["real_path"]:
        assert rate["succeeded"] == rate["jobs"] == rate["finals"] > 0, rate
        assert 0 < rate["delivered"] <= rate["produced"], rate
    assert verdict["client_errors"] == 0
    assert result["server_errors"] == []


@pytest.mark.timeout(180)
def test_load_benchmark_delivers_every_final_state_to_every_socket(tmp_path: Path) -> None:
    verdict = run_quick("load", tmp_path)["verdict"]
    assert verdict["sockets_opened"] == verdict["sockets_expected"] > 0
    assert verdict["jobs_succeeded"] == verdict["jobs"] > 0
    assert verdict["finals_received"] >= verdict["finals_expected"] > 0
    assert verdict["missing"] == 0 and verdict["wrong"] == 0
    assert verdict["errors"] == 0, verdict
