"""The benchmarks' own rules (design.md §5b "Honest benchmarks"), checked without running them."""

from __future__ import annotations

import math

from bench.stack import MIN_PERCENTILE_SAMPLES, percentile


def test_a_percentile_over_fewer_than_1000_samples_is_not_a_number():
    """A "p99" over 30 samples was printed: it is only the largest of a small sample."""
    few = [float(i) for i in range(MIN_PERCENTILE_SAMPLES - 1)]
    assert math.isnan(percentile(few, 99)) and math.isnan(percentile(few, 50))
    assert percentile(few, 100) == max(few) and percentile(few, 0) == min(few)
    enough = [float(i) for i in range(1, MIN_PERCENTILE_SAMPLES + 1)]
    assert percentile(enough, 99) == 990.0 and percentile(enough, 50) == 500.0


def test_the_ceiling_consumer_relays_without_a_hop_to_the_database_thread(monkeypatch):
    """Channels' AsyncConsumer.dispatch awaits aclose_old_connections() (a hop to the database
    thread) before every handler; Runboard's consumer skips it, so a ceiling keeping it measured
    that hop, not Runboard (issue 15 §1)."""
    import asyncio
    import threading

    import channels.consumer
    from channels.generic.websocket import AsyncWebsocketConsumer

    from bench.ceiling import CeilingConsumer

    hops: list[str] = []

    async def hop() -> None:
        hops.append("database thread")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", hop)
    relayed: list[str] = []

    class Stock(AsyncWebsocketConsumer):  # Channels' own dispatch, to show what is counted
        async def event_relay(self, message):
            relayed.append(message["text"])

    class Ceiling(CeilingConsumer):
        async def event_relay(self, message):
            relayed.append(message["text"])

    def run(consumer: AsyncWebsocketConsumer, text: str) -> None:
        # In a thread of its own: a suite's browser tests leave Playwright's loop running here.
        thread = threading.Thread(
            target=asyncio.run, args=(consumer.dispatch({"type": "event.relay", "text": text}),)
        )
        thread.start()
        thread.join()

    run(Stock(), "stock")
    assert hops == ["database thread"]
    run(Ceiling(), "ceiling")
    assert hops == ["database thread"] and relayed == ["stock", "ceiling"]


def _transport_round(variant: str, r: int, latencies: list[float]) -> dict:
    return {
        "variant": variant, "round": r, "sent": len(latencies), "received": len(latencies),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies), "send_rate": 5.0, "max_lag_ms": 0.0, "latencies_ms": latencies,
    }  # fmt: skip


def test_transport_judges_its_percentiles_on_rounds_pooled_to_the_sample_floor():
    """Scenario 1's 1-user case had 30 samples a round, so each round's "p99" was its maximum; with
    the floor, per-round percentiles are nan and the targets could never be judged. Rounds are now
    pooled (>= 1,000 samples) and the paired ratio is taken on each round's median."""
    import argparse

    from bench import transport

    rounds = []
    for r in range(4):
        for variant in ("p", "c") if r % 2 == 0 else ("c", "p"):
            rounds.append(_transport_round(variant, r, [1.0 + (k % 100) / 100 for k in range(250)]))
    case = {"name": "1 user x 5 updates/s", "sockets": 1, "rate": 5.0, "seconds": 50.0, "rounds": rounds}
    results = {"layer": "pubsub", "transport": {"cases": [case], "client_errors": [], "publish_failed": 0}}
    _, verdict = transport.report(results, argparse.Namespace(rounds=4, quick=False))
    assert [(t["figure"], t["ok"]) for t in verdict["targets"]] == [("p50", True), ("p99", True)]
    # Rounds long enough that 4 of them at 5 updates/s hold the floor.
    assert transport.round_seconds(5.0, 6.0, 4) * 5.0 * 4 >= MIN_PERCENTILE_SAMPLES


def test_transport_pooled_p99_over_too_few_samples_is_not_met():
    from bench import transport

    rounds = [_transport_round(v, 0, [1.0] * 30) for v in ("p", "c")]
    figures = transport.case_figures(rounds)
    assert math.isnan(figures["p99_ratio"]) and figures["median_ratios"] == [1.0]


def test_coalescing_figures_count_kept_values_and_how_long_dropped_ones_waited():
    """The real path: of 4 values produced 10 ms apart, the reporter pushed the 1st and the 3rd;
    the 2nd was shown (superseded) when the 3rd arrived, the 4th with the final state."""
    from bench.transport import coalescing_figures

    ms = 1_000_000
    produced = [0, 10 * ms, 20 * ms, 30 * ms]
    received = [
        [2 * ms, 1, str(0), "running"],
        [23 * ms, 3, str(20 * ms), "running"],
        [40 * ms, 4, str(30 * ms), "succeeded"],
        [41 * ms, 4, str(30 * ms), "succeeded"],  # a repeat counts once, at its first receipt
    ]
    got = coalescing_figures(produced, received)
    assert (got["produced"], got["delivered"], got["never_shown"]) == (4, 3, 0)
    assert got["delay_ms"] == [2.0, 3.0, 10.0]
    assert got["shown_ms"] == [2.0, 13.0, 3.0, 10.0]


def test_celery_progress_is_compared_per_update_delivered_not_per_progress_call():
    """The ">= 1,000x" comparison divided celery-progress's cost per update by Runboard's per
    `progress()` call, but the reporter coalesces calls to ~10 pushes a second: compared per
    update a client receives, on worker CPU, the same figures give a few times, not 25,000x."""
    import argparse

    from bench import progress_overhead as po

    s = po.Samples()
    for key, value in {
        "tiny_ns": 400.0, "cpu_pct": 0.5, "sleep_pct": 0.4, "tiny_pct": 25.0, "steady_pps": 9.7,
        "cp_ws_ms": 10.0, "cp_poll_ms": 1.2, "cp_ws_cpu_ms": 5.0,
        "paced_5_ms": 1.5, "paced_20_ms": 1.5, "paced_100_ms": 1.5,
    }.items():  # fmt: skip
        s.add(key, value)
    info = {"received": 10, "sent": 10, "pushes": 10, "calls": 1_000_000, "bg_cpu": 0.03}
    s.note("delivery", info)
    s.note("continuous", info)
    results = {"s": s, "n": 1_000_000, "stall": {"worst_ms": 1.0}}
    rows = po.summary(argparse.Namespace(), results)
    judged = [r for r in rows if r["target"] == ">= 1,000x"]
    assert judged and all("delivered" in r["metric"] for r in judged)
    assert [r["met"] for r in judged] == [False] * len(judged)
    assert po.comparison(5.0, po.cost_per_delivered(0.015, 10)) == 5.0 / 1.5
