"""Channel layer throughput per Redis shard (issue 17 §4: the plan sizes its Redis shards from it).

Run from the project root: ``.venv/bin/python bench/layer_throughput.py [--quick]``. Writes
bench/results/layer_throughput.md and layer_throughput.json.

One private redis-server (a shard), Channels' PubSub layer as Runboard configures it
(channels_redis.pubsub.RedisPubSubChannelLayer). S subscriber processes stand for S web
processes: each joins the same G groups (users whose sockets are spread over every web process,
as with no sticky routing) with one channel each, and counts what it receives. One publisher
process ``group_send``s M job-update-sized messages (~1.4 KiB, a typical job payload) round-robin
over the groups, as fast as it can, from P concurrent tasks. Figures, per round:

- publishes per second and deliveries per second (each publish reaches S subscribers);
- the redis-server's CPU seconds per 1,000 publishes and per 1,000 deliveries (from /proc), so
  a shard's ceiling is about 1 / (CPU per publish) publishes per second of one core (Redis
  executes commands on one thread);
- lost messages (sent - received, per subscriber).

The publisher and subscribers share this machine's 2 cores with Redis: the rate is a floor for
the layer, the Redis CPU per message is the figure to size shards by.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row, summarize, write_results  # noqa: E402
from bench.stack import median, set_results_dir, write_json  # noqa: E402
from bench.support import proc_stat  # noqa: E402
from scripts.harness import RedisServer  # noqa: E402

BACKEND = "channels_redis.pubsub.RedisPubSubChannelLayer"
PAYLOAD = "x" * 1400  # a job payload is ~1-4 KiB (docs/protocol.md, "Size bounds")


def _layer(url: str) -> Any:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=[{"address": url}], prefix="runboard")


def _subscriber(url: str, groups: int, expected: int, ready: Any, counts: Any, index: int) -> None:
    async def run() -> None:
        layer = _layer(url)
        channel = await layer.new_channel()
        for g in range(groups):
            await layer.group_add(f"user.{g}", channel)
        ready.put(index)
        received = 0
        while received < expected:
            try:
                await asyncio.wait_for(layer.receive(channel), timeout=10)
            except TimeoutError:
                break
            received += 1
            if received % 1000 == 0:
                counts[index] = received
        counts[index] = received
        await layer.flush()

    asyncio.run(run())


def _publisher(url: str, groups: int, messages: int, tasks: int, started: Any) -> None:
    async def run() -> None:
        layer = _layer(url)
        per_task = messages // tasks

        async def send(t: int) -> None:
            for k in range(per_task):
                group = f"user.{(t * per_task + k) % groups}"
                await layer.group_send(group, {"type": "event.relay", "text": PAYLOAD})

        started.value = time.time()
        await asyncio.gather(*(send(t) for t in range(tasks)))
        await layer.flush()

    asyncio.run(run())


def one_round(redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    counts: Any = ctx.Array("l", args.subscribers)
    started: Any = ctx.Value("d", 0.0)
    messages = args.messages // args.tasks * args.tasks
    subs = [
        ctx.Process(target=_subscriber, args=(redis.url, args.groups, messages, ready, counts, i))
        for i in range(args.subscribers)
    ]
    for proc in subs:
        proc.start()
    for _ in subs:
        ready.get(timeout=120)
    time.sleep(0.5)
    assert redis.process is not None
    before = proc_stat(redis.process.pid)
    t0 = time.time()
    publisher = ctx.Process(target=_publisher, args=(redis.url, args.groups, messages, args.tasks, started))
    publisher.start()
    publisher.join(timeout=600)
    published_s = time.time() - t0
    for proc in subs:
        proc.join(timeout=60)
    delivered_s = time.time() - t0
    after = proc_stat(redis.process.pid)
    redis_cpu = (after[1] - before[1]) if before and after else float("nan")
    received = list(counts)
    return {
        "published": messages,
        "publish_s": published_s,
        "deliver_s": delivered_s,
        "publishes_per_s": messages / published_s,
        "deliveries_per_s": sum(received) / delivered_s,
        "received": received,
        "lost": sum(messages - r for r in received),
        "redis_cpu_s": redis_cpu,
        # CPU seconds x 1,000 ms x 1,000 messages / messages
        "redis_cpu_ms_per_1000_publishes": 1e6 * redis_cpu / messages,
        "redis_cpu_ms_per_1000_deliveries": 1e6 * redis_cpu / max(1, sum(received)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--messages", type=int, default=None, help="per round (default 50000; quick 5000)")
    parser.add_argument("--groups", type=int, default=1000, help="user groups the messages go to")
    parser.add_argument("--subscribers", type=int, default=4, help="subscriber processes (web processes)")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent publishing tasks")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (quick 1)")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.messages = args.messages or (5_000 if args.quick else 50_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    set_results_dir(args.results_dir)
    started = time.monotonic()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="runboard-bench-layer-") as tmp, RedisServer(tmp) as redis:
        for r in range(args.rounds):
            result = one_round(redis, args)
            rounds.append(result)
            print(
                f"  [round {r}] {result['publishes_per_s']:.0f} publishes/s, "
                f"{result['deliveries_per_s']:.0f} "
                f"deliveries/s, Redis {result['redis_cpu_ms_per_1000_publishes']:.1f} ms CPU per 1,000 "
                f"publishes, lost {result['lost']}",
                flush=True,
            )
    pub = [r["publishes_per_s"] for r in rounds]
    dlv = [r["deliveries_per_s"] for r in rounds]
    cpu_pub = [r["redis_cpu_ms_per_1000_publishes"] for r in rounds]
    cpu_dlv = [r["redis_cpu_ms_per_1000_deliveries"] for r in rounds]
    lost = sum(r["lost"] for r in rounds)
    ceiling = [1_000_000 / ms for ms in cpu_pub]  # publishes per second of one Redis core
    body = "\n".join(
        [
            f"One Redis shard, the PubSub layer; {args.subscribers} subscriber processes (as web processes), "
            f"each in the same {args.groups:,} groups; one publisher process, {args.tasks} tasks; "
            f"{args.messages:,} messages of {len(PAYLOAD):,} bytes per round.",
            "",
            "| round | publishes/s | deliveries/s | Redis CPU (ms) per 1,000 publishes | per 1,000 deliveries"
            " | lost |",
            "|---|---|---|---|---|---|",
            *(
                f"| {i} | {r['publishes_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} | "
                f"{r['redis_cpu_ms_per_1000_publishes']:.1f} | {r['redis_cpu_ms_per_1000_deliveries']:.1f} | "
                f"{r['lost']} |"
                for i, r in enumerate(rounds)
            ),
            "",
            f"A shard's ceiling from its CPU alone (one core, Redis runs commands on one thread): about "
            f"{median(ceiling):,.0f} publishes per second, each reaching {args.subscribers} web processes.",
            f"\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}.",
        ]
    )
    scenario = "17. Scale-out: a layer shard"
    summary = [
        row(
            scenario,
            f"publishes per second to {args.subscribers} subscribers (one shard)",
            "report",
            summarize(pub, ".0f"),
            None,
        ),
        row(scenario, "deliveries per second (one shard)", "report", summarize(dlv, ".0f"), None),
        row(scenario, "Redis CPU per 1,000 publishes (ms)", "report", summarize(cpu_pub, ".1f"), None),
        row(scenario, "Redis CPU per 1,000 deliveries (ms)", "report", summarize(cpu_dlv, ".1f"), None),
        row(scenario, "lost (all rounds)", "0", str(lost), lost == 0),
    ]
    print(body)
    if not args.no_write:
        title = "Channel layer throughput per Redis shard"
        print(f"wrote {write_results('layer_throughput', title, body, summary)}")
        verdict = {
            "publishes_per_s": median(pub),
            "redis_ms_per_1000_publishes": median(cpu_pub),
            "lost": lost,
        }
        write_json("layer_throughput", {"verdict": verdict, "quick": args.quick})


if __name__ == "__main__":
    main()
