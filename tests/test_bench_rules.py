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
