"""Transport latency (issue 8, scenario 1) and staleness of displayed progress (scenario 2).

Run from the project root: ``.venv/bin/python bench/transport.py [--quick] [--layer pubsub|core]
[--rounds N] [--real-rounds N] [--real-seconds S] [--no-browser] [--skip-real] [--skip-staleness]``.
Writes bench/results/transport.md (``transport-core.md`` with ``--layer core``) and a .json twin.

Real processes: a private redis-server, uvicorn exactly as the Procfile runs it (serving the
project's application plus the ceiling route, bench/asgi_bench.py), a Celery worker, and the
WebSocket clients in their own process (bench/clients.py). This process is the worker-like
publisher: Django set up on the same scratch DB and Redis.

Scenario 1, transport latency: at a fixed rate (bench.stack.Pacer: an absolute schedule), this
process builds a real job payload whose progress message is ``time.time_ns()`` taken at the call
site, and either pushes it through the project's one publisher (``notifications.push.push_event``
to the user's group; the socket is an authenticated NotificationConsumer) or, for the ceiling,
``group_send``s the same text from a kept loop to a bare consumer's group (bench/ceiling.py).
The client stamps ``time.time_ns()`` on receipt: latency = receipt - send, same clock. Rounds
alternate project/ceiling (the order flips every round); each round counts delivery (100%
expected: every message sent to a group with exactly one socket). Every printed percentile is
over at least 1,000 samples (bench.stack.MIN_PERCENTILE_SAMPLES): a case's rounds are lengthened
until the rounds of one variant, pooled, hold that many (1 user x 5 updates/s: 4 rounds of 50 s),
and percentiles are taken over the pooled rounds; the p50 ratio is paired, each round's median
over the paired round's, median over pairs; the p99 ratio is pooled p99 over pooled p99
(``case_figures``).

Scenario 1, the real path (issue 15 §1: the latency goal is from ``ctx.progress()`` in a worker
to receipt in the browser's socket): rounds in which a real Celery worker runs one
``bench_progress`` job per rate (5, 20 and 100 calls per second, an absolute schedule) at the
same time, each writing every call's timestamp to a file; the reporter coalesces them (at most
one push per ``RUNBOARD_PUSH_INTERVAL``), the layer and uvicorn carry them to one signed-in
socket per owner, and the project's own page in headless Chromium (Debian's ``/usr/bin/chromium``
driven by Playwright, as the browser tests do) receives the first owner's. Reported per rate
(``coalescing_figures``): values kept (distinct values received / calls made), receipt - produce
of each delivered value, and, for every call made, how long until the display showed it or a
newer value (the delay coalescing adds), pooled over rounds.

Scenario 2, staleness: a real Celery worker runs the ``bench_progress`` kind (bench/kinds.py),
which calls ``ctx.progress(i, None, str(time.time_ns()))`` as fast as it can. One signed-in
socket of the owner records every update. Definition: at any instant t while the job runs, the
display shows the value of the last update received; its *staleness* is t minus the wall time at
which the job produced that value (the message's timestamp). Since the job produces a new value
every microsecond or so, that is how far the display lags the truth. We sample it every 1 ms from
the first update received to the job's end (time-weighted), and report p50/p99/max. Final-state
latency: receipt of the final ``job.update`` minus ``ended_ns``, the instant the kind's ``run``
returned (in the job's result). Interleaved with it: celery-progress's polling (a bound task
calling ``ProgressRecorder.set_progress`` as fast as it can, polled at its JS client's 500 ms),
with the same definitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row, summarize, write_results  # noqa: E402
from bench.stack import (  # noqa: E402
    MIN_PERCENTILE_SAMPLES,
    Pacer,
    Stack,
    bench_stack,
    ceiling_socket,
    make_users,
    median,
    met,
    percentile,
    project_socket,
    set_results_dir,
    write_json,
)

FULL_CASES = [
    ("1 user x 5 updates/s", 1, 5.0, 6.0),
    ("100 users x 5 updates/s", 100, 500.0, 3.0),
    ("1,000 sockets at 1,000 msgs/s", 1000, 1000.0, 3.0),
]
QUICK_CASES = [
    ("1 user x 5 updates/s", 1, 5.0, 1.0),
    ("20 users x 5 updates/s", 20, 100.0, 1.0),
    ("200 sockets at 200 msgs/s", 200, 200.0, 1.0),
]
DRAIN_TIMEOUT = 10.0


def round_seconds(rate: float, seconds: float, rounds: int, *, quick: bool = False) -> float:
    """Seconds per round of a scenario 1 case: its own length, or longer so that the rounds of one
    variant, pooled, hold MIN_PERCENTILE_SAMPLES latencies (1 user x 5 updates/s over 4 rounds:
    50 s rounds, 1,000 samples). ``--quick`` keeps the short rounds (its percentiles print nan)."""
    if quick:
        return seconds
    return max(seconds, float(-(-MIN_PERCENTILE_SAMPLES // int(rate * rounds))))


def case_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Scenario 1's figures for one case from its rounds (each {variant: "p"|"c", latencies_ms}).

    Percentiles are taken over every round of a variant pooled (MIN_PERCENTILE_SAMPLES or more,
    else nan); the paired ratios per round are computed on each round's median, which needs no
    sample floor (issue 15 §1: a "p99" over a 30-sample round was its maximum). Returns pooled
    p50/p95/p99/max and counts per variant, ``median_ratios`` (per round pair, project/ceiling),
    ``p99_ratio`` (pooled p99 over pooled p99) and ``round_p99_ratios`` (only from round pairs
    that each hold the floor themselves).
    """
    by = {v: [x for x in rounds if x["variant"] == v] for v in ("p", "c")}
    pooled = {v: [lat for x in by[v] for lat in x["latencies_ms"]] for v in by}
    figures: dict[str, Any] = {"pooled": pooled}
    for v in by:
        figures[v] = {
            "samples": len(pooled[v]),
            "rounds": len(by[v]),
            **{f"p{q}_ms": percentile(pooled[v], q) for q in (50, 95, 99)},
            "max_ms": max(pooled[v], default=float("nan")),
        }
    pairs = list(zip(by["p"], by["c"], strict=True))
    figures["median_ratios"] = [
        statistics.median(p["latencies_ms"]) / statistics.median(c["latencies_ms"])
        for p, c in pairs
        if p["latencies_ms"] and c["latencies_ms"] and statistics.median(c["latencies_ms"]) > 0
    ]
    c99 = figures["c"]["p99_ms"]
    figures["p99_ratio"] = figures["p"]["p99_ms"] / c99 if c99 > 0 else float("nan")
    figures["round_p99_ratios"] = [
        percentile(p["latencies_ms"], 99) / percentile(c["latencies_ms"], 99)
        for p, c in pairs
        if min(len(p["latencies_ms"]), len(c["latencies_ms"])) >= MIN_PERCENTILE_SAMPLES
    ]
    return figures


# --- scenario 1 -------------------------------------------------------------------------------


def payload_template(owner_id: int) -> dict[str, Any]:
    """A real running job's payload, as the reporter pushes it."""
    from django.utils import timezone

    from jobs.models import Job, JobState
    from jobs.selectors import job_payload

    job = Job.objects.create(
        owner_id=owner_id,
        kind="simulate",
        params={"steps": 1000, "step_ms": 10, "fail_at_step": None},
        state=JobState.RUNNING,
        started_at=timezone.now(),
        progress_total=None,
    )
    return dict(job_payload(job))


def transport(stack: Stack, args: argparse.Namespace, web: Any) -> dict[str, Any]:
    from bench.ceiling import LayerSender, ceiling_group
    from notifications import events, push

    cases = QUICK_CASES if args.quick else FULL_CASES
    sockets = max(n for _, n, _, _ in cases)
    users = make_users(sockets, prefix="transport")
    template = payload_template(users[0].id)
    clients = stack.clients("clients-transport")
    clients.open_all(
        url=web.ws_url,
        origin=web.origin,
        concurrency=50,
        sockets=[project_socket(u, tag="p") for u in users]
        + [ceiling_socket(i, tag="c") for i in range(sockets)],
    )
    sender = LayerSender()
    groups = {
        "p": [events.user_group(u.id) for u in users],
        "c": [ceiling_group(str(i)) for i in range(sockets)],
    }

    def event(k: int) -> Any:
        payload = dict(template)
        payload["progress"] = {"current": k, "total": None, "message": str(time.time_ns())}
        payload["version"] = k
        return events.job_update(payload)  # type: ignore[arg-type]

    def send_project(k: int, n: int) -> None:
        push.push_event(group=groups["p"][k % n], event=event(k))

    def send_ceiling(k: int, n: int) -> None:
        sender.group_send(groups["c"][k % n], events.dumps(event(k)))

    results: list[dict[str, Any]] = []
    for name, n, rate, seconds in cases:
        seconds = round_seconds(rate, seconds, args.rounds, quick=args.quick)
        case: dict[str, Any] = {"name": name, "sockets": n, "rate": rate, "seconds": seconds, "rounds": []}
        count = int(rate * seconds)
        for r in range(args.rounds):
            for variant in ("p", "c") if r % 2 == 0 else ("c", "p"):
                clients.call("reset")
                pacer = Pacer(rate)
                send = send_project if variant == "p" else send_ceiling
                elapsed = pacer.run(count, lambda k, send=send, n=n: send(k, n))
                push.flush() if variant == "p" else sender.flush()
                clients.wait_count(
                    lambda c, v=variant, want=count: c["frames"].get(v, 0) >= want, DRAIN_TIMEOUT
                )
                stats = clients.call("stats", detail=False)
                lat = [v / 1000 for v in stats["latency_us"].get(variant, [])]
                case["rounds"].append(
                    {
                        "variant": variant,
                        "round": r,
                        "sent": count,
                        "received": len(lat),
                        "p50_ms": percentile(lat, 50),
                        "p99_ms": percentile(lat, 99),
                        "max_ms": max(lat, default=0),
                        "send_rate": (count - 1) / elapsed if count > 1 else float("nan"),
                        "max_lag_ms": pacer.max_lag * 1000,
                        "latencies_ms": lat,
                    }
                )
                print(
                    f"  {name} [{'project' if variant == 'p' else 'ceiling'} round {r}]: "
                    f"{len(lat)}/{count} median {median(lat):.2f} ms max {max(lat, default=0):.2f} ms",
                    flush=True,
                )
        results.append(case)
    errors = clients.call("stats", detail=False)["errors"]
    stack.stop(clients)
    return {
        "cases": results,
        "client_errors": errors,
        "publish_failed": push._publisher.get().failed + sender.failed,
    }


# --- scenario 1, the real path: ctx.progress() in a worker to a client's socket ----------------

REAL_RATES = (5.0, 20.0, 100.0)
CHROMIUM = "/usr/bin/chromium"
# As tests/conftest.py launches it: Chromium's background services would try the closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def coalescing_figures(produced: list[int], received: list[list[Any]]) -> dict[str, Any]:
    """How the reporter's coalescing shaped one job's stream, as one socket saw it.

    ``produced``: the ``time.time_ns()`` of every ``ctx.progress()`` call, in call order (the job's
    trace file); ``received``: the socket's rows [recv_ns, current, ts_ns, state] (bench.clients
    trace rows, or browser rows with the message in place of ts). A value counts once, at its
    first receipt (the final state repeats the last one). Returns ``produced`` and ``delivered``
    (distinct values received), ``delay_ms`` (receipt - produce of each delivered value),
    ``shown_ms`` (for every produced value: the first receipt of it or of a newer value - produce:
    how long until the display caught up with it) and ``never_shown`` (values no receipt
    covered). Units: ms; ``receipts`` maps ts_ns -> first recv_ns.
    """
    receipts: dict[int, int] = {}
    for recv, _current, ts, _state in received:
        if ts is not None and str(ts).isdigit():
            receipts.setdefault(int(ts), int(recv))
    index = {ts: k for k, ts in enumerate(produced)}
    delivered = sorted((index[ts], recv) for ts, recv in receipts.items() if ts in index)
    delay = [(recv - produced[k]) / 1e6 for k, recv in delivered]
    shown: list[float] = []
    best: int | None = None
    j = len(delivered) - 1
    for k in range(len(produced) - 1, -1, -1):
        while j >= 0 and delivered[j][0] >= k:
            best = delivered[j][1] if best is None else min(best, delivered[j][1])
            j -= 1
        if best is not None:
            shown.append((best - produced[k]) / 1e6)
    shown.reverse()
    return {
        "produced": len(produced),
        "delivered": len(delivered),
        "delay_ms": delay,
        "shown_ms": shown,
        "never_shown": len(produced) - len(shown),
        "receipts": receipts,
    }


def real_path(stack: Stack, args: argparse.Namespace, web: Any) -> dict[str, Any]:
    """Rounds in which one job per rate (REAL_RATES, calls per second on an absolute schedule)
    runs on a real worker at the same time, each for its own user with one socket (and, for the
    first rate, a real Chromium page of the project's own: bench.clients ``browser_open``)."""
    from django.contrib.auth import get_user_model

    from jobs.launch import job_create
    from jobs.models import Job

    stack.worker(concurrency=len(REAL_RATES), name="worker-realpath")
    users = make_users(len(REAL_RATES), prefix="realpath")
    owners = [get_user_model().objects.get(pk=u.id) for u in users]
    clients = stack.clients("clients-realpath")
    opened = clients.open_all(
        url=web.ws_url,
        origin=web.origin,
        sockets=[project_socket(u, tag=f"r{i}", trace=True) for i, u in enumerate(users)],
    )
    first = int(opened["first"])
    browser_note = "not run (--no-browser)" if not args.browser else ""
    if args.browser:
        if not Path(CHROMIUM).exists():
            browser_note = f"not run: {CHROMIUM} not found"
        else:
            try:
                clients.call(
                    "browser_open", timeout=120, url=web.url, executable=CHROMIUM, args=CHROMIUM_ARGS,
                    pages=[{"path": "/", "cookie": users[0].cookie}],
                )  # fmt: skip
            except RuntimeError as exc:
                browser_note = f"not run: {exc}"[:300]
    browser = not browser_note
    rates: list[dict[str, Any]] = [
        {"rate": rate, "produced": 0, "delivered": 0, "delay_ms": [], "shown_ms": [], "never_shown": 0,
         "jobs": 0, "succeeded": 0, "finals": 0}
        for rate in REAL_RATES
    ]  # fmt: skip
    seen: dict[str, Any] = {"produced": 0, "delivered": 0, "delay_ms": [], "browser_minus_client_ms": []}
    for r in range(args.real_rounds):
        clients.call("reset")
        if browser:
            clients.call("browser_rows")  # what the page got between rounds is not this round's
        launched = []
        for i, rate in enumerate(REAL_RATES):
            trace = stack.env.var_dir / f"produced-{i}-{r}.txt"
            params = {"seconds": args.real_seconds, "rate": rate, "trace_path": str(trace)}
            job = job_create(owner=owners[i], kind="bench_progress", params=params, rate_limit=False)
            launched.append((i, job.id, trace))
        clients.wait_count(lambda c: c["finals"] >= len(REAL_RATES), args.real_seconds + 90)
        stats = clients.call("stats")
        page_rows = clients.call("browser_rows")["rows"] if browser else []
        for i, job_id, trace in launched:
            job = Job.objects.get(pk=job_id)
            produced = [int(x) for x in trace.read_text().split()] if trace.exists() else []
            got = coalescing_figures(produced, stats["traces"].get(str(first + i), []))
            into = rates[i]
            into["jobs"] += 1
            into["succeeded"] += job.state == "succeeded"
            into["finals"] += str(job_id) in stats["finals"].get(str(first + i), {})
            for key in ("produced", "delivered", "never_shown"):
                into[key] += got[key]
            into["delay_ms"] += got["delay_ms"]
            into["shown_ms"] += got["shown_ms"]
            if i == 0 and page_rows:
                rows = [[recv, current, text, state] for recv, text, current, state in page_rows[0]]
                page = coalescing_figures(produced, rows)
                seen["produced"] += page["produced"]
                seen["delivered"] += page["delivered"]
                seen["delay_ms"] += page["delay_ms"]
                seen["browser_minus_client_ms"] += [
                    (recv - got["receipts"][ts]) / 1e6
                    for ts, recv in page["receipts"].items()
                    if ts in got["receipts"]
                ]
        print(
            f"  real path round {r}: "
            + ", ".join(f"{x['rate']:g}/s kept {x['delivered']}/{x['produced']}" for x in rates)
            + (f"; browser {seen['delivered']}/{seen['produced']}" if browser else ""),
            flush=True,
        )
    errors = clients.call("stats", detail=False)["errors"]
    stack.stop(clients)
    return {
        "rates": rates,
        "browser": seen if browser else None,
        "browser_note": browser_note,
        "rounds": args.real_rounds,
        "seconds": args.real_seconds,
        "client_errors": errors,
    }


# --- scenario 2 -------------------------------------------------------------------------------


def staleness_of(rows: list[list[Any]], end_ns: int | None) -> dict[str, float]:
    """Time-weighted staleness (ms), sampled every 1 ms from the first timestamped update to the end."""
    updates = sorted((r[0], r[2]) for r in rows if r[2] is not None)
    if not updates or end_ns is None:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"), "updates": 0}
    samples, j, t = [], 0, updates[0][0]
    while t < end_ns:
        while j + 1 < len(updates) and updates[j + 1][0] <= t:
            j += 1
        samples.append((t - updates[j][1]) / 1e6)
        t += 1_000_000
    arrival = [(recv - ts) / 1e6 for recv, ts in updates]
    span = max(1e-9, (end_ns - updates[0][0]) / 1e9)
    return {
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples, default=0),
        "updates": len(updates),
        "updates_per_s": len(updates) / span,
        "age_at_receipt_p50_ms": percentile(arrival, 50),
        "age_at_receipt_p99_ms": percentile(arrival, 99),
        "ages_ms": arrival,
    }


def staleness(stack: Stack, args: argparse.Namespace, web: Any) -> dict[str, Any]:
    from dashboard.celery import app
    from jobs.launch import job_create
    from jobs.models import FINAL_STATES, Job

    seconds = args.job_seconds
    stack.worker(concurrency=1, name="worker-staleness")
    (owner,) = make_users(1, prefix="stale")
    clients = stack.clients("clients-staleness")
    index = clients.call(
        "open", url=web.ws_url, origin=web.origin, sockets=[project_socket(owner, trace=True)]
    )
    if index["failed"]:
        raise RuntimeError(f"could not open the socket: {index['failures']}")
    sock = str(index["first"])
    from django.contrib.auth import get_user_model

    owner_obj = get_user_model().objects.get(pk=owner.id)
    runs: list[dict[str, Any]] = []
    for r in range(args.staleness_runs):
        for variant in ("runboard", "celery-progress") if r % 2 == 0 else ("celery-progress", "runboard"):
            clients.call("reset")
            if variant == "runboard":
                job = job_create(
                    owner=owner_obj, kind="bench_progress", params={"seconds": seconds}, rate_limit=False
                )
                counts = clients.wait_count(lambda c: c["finals"] >= 1, seconds + 60)
                stats = clients.call("stats")
                rows = stats["traces"].get(sock, [])
                final = stats["finals"].get(sock, {}).get(str(job.id))
                row = Job.objects.get(pk=job.id)
                end_ns = (row.result or {}).get("ended_ns")
                run = {
                    "variant": variant,
                    "state": row.state,
                    "final_received": final is not None,
                    "final_ms": (final[1] - end_ns) / 1e6 if final and end_ns else float("nan"),
                    "steps": (row.result or {}).get("steps"),
                    **staleness_of(rows, end_ns),
                }
                assert row.state in FINAL_STATES, counts
            else:
                result = app.send_task("bench.celery_progress_job", kwargs={"seconds": seconds})
                polled = clients.call(
                    "poll",
                    url=f"{web.url}/celery-progress/{result.id}/",
                    pollers=1,
                    interval=0.5,
                    seconds=seconds + 1.5,
                    trace=True,
                    timeout=seconds + 60,
                )
                outcome = result.get(timeout=60)
                end_ns = outcome["ended_ns"]
                rows = polled["trace"]
                done = [row for row in rows if row[3] == "SUCCESS"]
                run = {
                    "variant": variant,
                    "state": "succeeded" if done else "unfinished",
                    "final_received": bool(done),
                    "final_ms": (done[0][0] - end_ns) / 1e6 if done else float("nan"),
                    "steps": outcome["steps"],
                    **staleness_of(rows, end_ns),
                }
            runs.append(run)
            print(
                f"  staleness [{variant} run {r}]: p50 {run['p50_ms']:.1f} ms p99 {run['p99_ms']:.1f} ms, "
                f"final {run['final_ms']:.1f} ms, {run['updates']} updates, {run['steps']} steps",
                flush=True,
            )
    errors = clients.call("stats", detail=False)["errors"]
    stack.stop(clients)
    return {"runs": runs, "seconds": seconds, "client_errors": errors}


# --- report -----------------------------------------------------------------------------------


def fmt(values: list[float], spec: str = ".3g") -> str:
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], spec)
    return summarize(values)


def report(results: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    rows = [
        "| Case | Figure | Runboard | Ceiling | Ratio Runboard / ceiling | Target | Met? |",
        "|---|---|---|---|---|---|---|",
    ]
    verdict: dict[str, Any] = {"delivery": [], "targets": []}
    summary: list[dict[str, Any]] = []
    sc1 = "1. Transport latency"
    for case in results["transport"]["cases"]:
        by = {v: [x for x in case["rounds"] if x["variant"] == v] for v in ("p", "c")}
        fig = case_figures(case["rounds"])
        p, c = fig["p"], fig["c"]
        delivered = {v: sum(x["received"] for x in by[v]) / max(1, sum(x["sent"] for x in by[v])) for v in by}
        verdict["delivery"].append({"case": case["name"], **{k: delivered[k] for k in delivered}})
        samples = f"{p['samples']:,} / {c['samples']:,} samples over {p['rounds']} rounds each"
        ratios = fig["median_ratios"]
        ok50 = bool(ratios) and median(ratios) <= 1.5 and p["p50_ms"] == p["p50_ms"]
        ok99 = fig["p99_ratio"] <= 2.0  # nan (fewer samples than the floor) compares False
        verdict["targets"] += [
            {"case": case["name"], "figure": "p50", "ok": ok50},
            {"case": case["name"], "figure": "p99", "ok": ok99},
        ]
        ratio95 = p["p95_ms"] / c["p95_ms"] if c["p95_ms"] > 0 else float("nan")
        per_round99 = (
            f"; per round pair (each >= {MIN_PERCENTILE_SAMPLES:,}): {fmt(fig['round_p99_ratios'])}"
            if fig["round_p99_ratios"]
            else ""
        )
        rows += [
            f"| {case['name']} | p50 latency (ms), rounds pooled | {p['p50_ms']:.3g} | {c['p50_ms']:.3g} | "
            f"{fmt(ratios)} (each round's median / the paired round's) | <= 1.5x ceiling | {met(ok50)} |",
            f"| {case['name']} | p95 latency (ms), rounds pooled | {p['p95_ms']:.3g} | {c['p95_ms']:.3g} | "
            f"{ratio95:.3g} (pooled / pooled) | - | - |",
            f"| {case['name']} | p99 latency (ms), rounds pooled | {p['p99_ms']:.3g} | {c['p99_ms']:.3g} | "
            f"{fig['p99_ratio']:.3g} (pooled / pooled){per_round99} | <= 2.0x ceiling | {met(ok99)} |",
            f"| {case['name']} | max (ms) / samples per variant | {p['max_ms']:.3g} / {p['samples']:,} | "
            f"{c['max_ms']:.3g} / {c['samples']:,} | - | - | - |",
        ]
        ok = delivered["p"] == 1.0 and delivered["c"] == 1.0
        rows.append(
            f"| {case['name']} | delivered | {delivered['p']:.2%} | {delivered['c']:.2%} | - | 100% | "
            f"{met(ok)} |"
        )
        lag = max(x["max_lag_ms"] for x in case["rounds"])
        rows.append(
            f"| {case['name']} | send rate achieved (msgs/s) / worst schedule lag | "
            f"{fmt([x['send_rate'] for x in by['p']], '.4g')} | "
            f"{fmt([x['send_rate'] for x in by['c']], '.4g')} | "
            f"- | {case['rate']:g}/s | lag {lag:.1f} ms |"
        )
        summary += [
            row(sc1, f"{case['name']}: p50 latency (ms)", "<= 1.5x ceiling",
                f"{p['p50_ms']:.3g} vs ceiling {c['p50_ms']:.3g} (rounds pooled, {samples}); ratio "
                f"{fmt(ratios)}, paired on round medians", ok50),
            row(sc1, f"{case['name']}: p99 latency (ms)", "<= 2.0x ceiling",
                f"{p['p99_ms']:.3g} vs ceiling {c['p99_ms']:.3g} (rounds pooled, {samples}); ratio "
                f"{fig['p99_ratio']:.3g}, pooled over pooled", ok99),
            row(sc1, f"{case['name']}: delivered", "100%",
                f"{delivered['p']:.2%} (ceiling {delivered['c']:.2%})", ok),
        ]  # fmt: skip
    st = results.get("staleness")
    srows: list[str] = []
    if st:
        srows = [
            "| Figure | Runboard | celery-progress (polling at 500 ms) | Target | Met? |",
            "|---|---|---|---|---|",
        ]
        by = {v: [x for x in st["runs"] if x["variant"] == v] for v in ("runboard", "celery-progress")}
        rb, cp = by["runboard"], by["celery-progress"]
        ok99 = bool(rb) and median([x["p99_ms"] for x in rb]) <= 120
        okfinal = bool(rb) and median([x["final_ms"] for x in rb]) <= 50
        finals = sum(x["final_received"] for x in rb)
        okdel = finals == len(rb)
        verdict["targets"] += [
            {"case": "staleness", "figure": "p99", "ok": ok99},
            {"case": "staleness", "figure": "final", "ok": okfinal},
        ]
        verdict["staleness_final_delivery"] = finals / max(1, len(rb))
        for label, key, target, ok in (
            ("staleness p50 (ms, time-weighted)", "p50_ms", "-", None),
            ("staleness p99 (ms, time-weighted)", "p99_ms", "<= 120 ms", ok99),
            ("staleness max (ms)", "max_ms", "-", None),
            ("updates displayed per second", "updates_per_s", "-", None),
            ("final state after the job's end (ms)", "final_ms", "<= 50 ms", okfinal),
            ("progress calls made by the job", "steps", "-", None),
        ):
            srows.append(
                f"| {label} | {fmt([x[key] for x in rb])} | {fmt([x[key] for x in cp])} | {target} | "
                f"{'-' if ok is None else met(ok)} |"
            )
        ages = {k: [a for x in v for a in x.get("ages_ms", [])] for k, v in (("rb", rb), ("cp", cp))}
        srows.append(
            "| age of a value at receipt p50 / p99 / max (ms), runs pooled (samples) | "
            + " | ".join(
                f"{percentile(ages[k], 50):.3g} / {percentile(ages[k], 99):.3g} / "
                f"{max(ages[k], default=float('nan')):.3g} ({len(ages[k]):,})"
                for k in ("rb", "cp")
            )
            + " | - | - |"
        )
        summary += [
            row("2. Staleness", "staleness p99 (ms, time-weighted)", "<= 120 ms",
                f"{fmt([x['p99_ms'] for x in rb])} (each run ~{st['seconds'] * 1000:,.0f} samples of 1 ms)",
                ok99),
            row("2. Staleness", "final state after the job's end (ms)", "<= 50 ms",
                fmt([x["final_ms"] for x in rb]), okfinal),
            row("2. Staleness", "final state delivered", "100%", f"{finals}/{len(rb)}", okdel),
        ]  # fmt: skip
        srows.append(
            f"| final state delivered | {finals}/{len(rb)} | "
            f"{sum(x['final_received'] for x in cp)}/{len(cp)} | 100% | {met(okdel)} |"
        )
    rp = results.get("real_path")
    rrows: list[str] = []
    if rp:
        base = next((case_figures(c["rounds"])["p"] for c in results["transport"]["cases"]), None)

        def pct(values: list[float]) -> str:
            return (
                " / ".join(f"{percentile(values, q):.3g}" for q in (50, 95, 99))
                + f" / {max(values, default=float('nan')):.3g} ({len(values):,})"
            )

        rrows = [
            "| Calls to `ctx.progress()` per second | values produced | values delivered (kept) | "
            "receipt - produce of each delivered value: p50 / p95 / p99 / max (ms) (samples) | "
            "produce - first receipt of it or a newer value, every value: p50 / p95 / p99 / max (ms) "
            "(samples) | jobs succeeded, final state delivered |",
            "|---|---|---|---|---|---|",
        ]
        for x in rp["rates"]:
            kept = x["delivered"] / max(1, x["produced"])
            never = f"; {x['never_shown']} never" if x["never_shown"] else ""
            rrows.append(
                f"| {x['rate']:g} | {x['produced']:,} | {x['delivered']:,} ({kept:.1%}) | "
                f"{pct(x['delay_ms'])} | {pct(x['shown_ms'])}{never} | "
                f"{x['succeeded']}/{x['jobs']}, {x['finals']}/{x['jobs']} |"
            )
            ok = x["succeeded"] == x["jobs"] == x["finals"] > 0
            summary += [
                row(sc1, f"real path, `ctx.progress()` in a worker -> socket, {x['rate']:g} calls/s: values "
                    "kept (delivered / produced); receipt - produce p50 / p95 / p99 (ms)", "report",
                    f"{kept:.1%} ({x['delivered']:,} / {x['produced']:,}); "
                    + " / ".join(f"{percentile(x['delay_ms'], q):.3g}" for q in (50, 95, 99))
                    + f" ({len(x['delay_ms']):,} samples)", None),
                row(sc1, f"real path, {x['rate']:g} calls/s: every job succeeded and its final state reached "
                    "the socket", "100%", f"{x['succeeded']}/{x['jobs']}, {x['finals']}/{x['jobs']}", ok),
            ]  # fmt: skip
        b = rp["browser"]
        if b:
            rrows.append(
                f"| {REAL_RATES[0]:g}, in headless Chromium (the project's page `/`, its own socket) | "
                f"{b['produced']:,} | {b['delivered']:,} ({b['delivered'] / max(1, b['produced']):.1%}) | "
                f"{pct(b['delay_ms'])} | page receipt - Python client receipt, same value: "
                f"{pct(b['browser_minus_client_ms'])} | - |"
            )
            summary.append(
                row(sc1, f"real path into a headless Chromium page, {REAL_RATES[0]:g} calls/s: receipt - "
                    "produce p50 / p95 / p99 (ms)", "report",
                    " / ".join(f"{percentile(b['delay_ms'], q):.3g}" for q in (50, 95, 99))
                    + f" ({len(b['delay_ms']):,} samples)", None)
            )  # fmt: skip
        if base is not None:
            first = rp["rates"][0]
            rrows += [
                "",
                f"For scale, in the same run: push -> receipt (scenario 1, "
                f"{results['transport']['cases'][0]['name']}, rounds pooled) p50 {base['p50_ms']:.3g} ms, "
                f"p99 {base['p99_ms']:.3g} ms; so the worker, its "
                f"reporter and the real job's payload add p50 "
                f"{percentile(first['delay_ms'], 50) - base['p50_ms']:.3g} ms at {first['rate']:g} calls/s.",
            ]
        if rp["browser_note"]:
            rrows += ["", f"Headless Chromium: {rp['browser_note']}."]
    errors = (
        results["transport"]["client_errors"]
        + (st["client_errors"] if st else [])
        + (rp["client_errors"] if rp else [])
    )
    setup = (
        f"Channel layer: `{results['layer']}`. uvicorn as in the Procfile (`--ws-max-size 65536 "
        "--ws-per-message-deflate false --proxy-headers`), one process; a private redis-server; clients "
        "in a separate process (`python -m bench.clients`, websockets, no compression). Scenario 1: "
        f"{args.rounds} rounds per variant, project and ceiling alternating (order flipped every round); "
        f"each "
        "round sends at a fixed rate (absolute schedule) round-robin over the case's sockets, one socket per "
        "group. Runboard: `push_event` to the user's group, consumed by an authenticated "
        "NotificationConsumer. Ceiling: bare `group_send` of the same JSON text from a kept loop to a bare "
        "consumer that forwards it (bench/ceiling.py), same server and layer. Latency = client "
        "`time.time_ns()` at receipt - `time.time_ns()` at the push call site (in the payload). "
        f"Percentiles: every round of a variant pooled, at least {MIN_PERCENTILE_SAMPLES:,} samples each "
        "(rounds are lengthened to reach it: the 1-user case at 5 updates/s runs "
        f"{round_seconds(5.0, 6.0, args.rounds, quick=args.quick):g} s rounds; fewer samples print nan and "
        "the target reads not met). The p50 ratio is paired: each round's median over the paired "
        "round's median, then the median (min, max, n) over round pairs; the p99 ratio is pooled p99 "
        "over pooled p99 (and, where each round alone holds the floor, also per round pair)."
    )
    if rp:
        setup += (
            f"\n\nScenario 1, the real path: {rp['rounds']} rounds; in each, one job per rate "
            f"({', '.join(f'{r:g}' for r in REAL_RATES)} calls/s) runs {rp['seconds']:g} s at the same time "
            f"on one real worker (`celery worker --concurrency {len(REAL_RATES)}`, prefork as the Procfile), "
            "each for its own user: the `bench_progress` kind calls `ctx.progress(i, None, "
            "str(time.time_ns()))` on an absolute schedule and writes every call's timestamp to a file; the "
            "reporter coalesces (at most one push per 0.1 s: `RUNBOARD_PUSH_INTERVAL`), pushes through "
            "the PubSub layer to uvicorn, and one signed-in socket per user (the client process) stamps "
            "receipt. Values kept = distinct values received / calls made; receipt - produce is taken for "
            "each delivered value; 'produce - first receipt of it or a newer value' for every call made "
            "(how long the display took to catch up with it: what coalescing adds). Samples are pooled over "
            "rounds. The first user also has the project's page `/` open in headless Chromium (Debian's, "
            "driven by Playwright), whose own socket client is stamped by a script injected before the "
            "page's (`performance.timeOrigin + performance.now()`); its receipts are paired with the "
            "Python client's, value by value."
        )
    if st:
        setup += (
            f"\n\nScenario 2: {len(st['runs'])} runs of {st['seconds']:g} s jobs, Runboard and "
            f"celery-progress "
            "alternating. Runboard: the `bench_progress` kind on a real worker (concurrency 1) calls "
            "`ctx.progress(i, None, str(time.time_ns()))` as fast as it can; one authenticated socket of the "
            "owner displays each update. celery-progress: a bound task calls `ProgressRecorder.set_progress` "
            "(an `update_state` into django-celery-results each call) as fast as it can; its polling "
            "endpoint "
            "is read every 500 ms (its JS client's default). Staleness at instant t = t - the wall time at "
            "which the job produced the value displayed at t; sampled every 1 ms from the first update to "
            "the "
            "job's end (time-weighted). Final state = receipt of the final state - the instant `run` "
            "returned."
        )
    body = "\n".join(
        [
            setup,
            "",
            "### Scenario 1: transport latency, push to receipt",
            "",
            *rows,
            "",
            *(
                ["### Scenario 1, the real path: `ctx.progress()` in a worker to the socket", "", *rrows, ""]
                if rrows
                else []
            ),
            *(["### Scenario 2: staleness of displayed progress", "", *srows, ""] if srows else []),
            f"Client errors: {len(errors)}{(': ' + '; '.join(errors[:5])) if errors else ''}. "
            f"Failed publishes: {results['transport']['publish_failed']}.",
        ]
    )
    verdict["client_errors"] = len(errors)
    verdict["summary"] = summary
    if rp:
        verdict["real_path"] = [
            {k: x[k] for k in ("rate", "produced", "delivered", "jobs", "succeeded", "finals")}
            for x in rp["rates"]
        ]
    return body, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--layer", choices=["pubsub", "core"], default="pubsub")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant (default 4; 2 quick)")
    parser.add_argument(
        "--staleness-runs", type=int, default=None, help="jobs per variant (default 4; 1 quick)"
    )
    parser.add_argument("--job-seconds", type=float, default=None, help="length of each staleness job")
    parser.add_argument("--skip-staleness", action="store_true")
    parser.add_argument("--real-rounds", type=int, default=None, help="real-path rounds (default 4; 1 quick)")
    parser.add_argument(
        "--real-seconds", type=float, default=None, help="seconds per real-path job (default 55; 2 quick)"
    )
    parser.add_argument("--skip-real", action="store_true", help="skip the real path (worker to socket)")
    parser.add_argument(
        "--browser", action=argparse.BooleanOptionalAction, default=None,
        help="also receive the real path in headless Chromium (default on, off with --quick)",
    )  # fmt: skip
    parser.add_argument("--results-dir", default=None, help="default bench/results ($BENCH_RESULTS_DIR)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.staleness_runs = args.staleness_runs or (1 if args.quick else 4)
    args.job_seconds = args.job_seconds or (1.0 if args.quick else 3.0)
    args.real_rounds = args.real_rounds or (1 if args.quick else 4)
    # 4 rounds x 55 s at 5 calls/s: 1,100 values, every one delivered, for percentiles of >= 1,000.
    args.real_seconds = args.real_seconds or (2.0 if args.quick else 55.0)
    args.browser = (not args.quick) if args.browser is None else args.browser
    set_results_dir(args.results_dir)

    started = time.monotonic()
    load_before = os.getloadavg()
    with bench_stack(layer=args.layer) as stack:
        web = stack.web()
        results: dict[str, Any] = {"layer": args.layer, "transport": transport(stack, args, web)}
        if not args.skip_real:
            results["real_path"] = real_path(stack, args, web)
        if not args.skip_staleness:
            results["staleness"] = staleness(stack, args, web)
        results["server_errors"] = stack.error_lines(web)
    body, verdict = report(results, args)
    body += (
        f"\n\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}. "
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs (other work on the "
        "machine, not this benchmark alone: compare the ratios, measured together, not absolute numbers)."
    )
    print(body)
    name = "transport" if args.layer == "pubsub" else f"transport-{args.layer}"
    if not args.no_write:
        title = f"Transport latency and staleness ({args.layer} layer)"
        print(f"wrote {write_results(name, title, body, summary=verdict.pop('summary'))}")
        write_json(
            name, {"verdict": verdict, "server_errors": results["server_errors"][:20], "quick": args.quick}
        )


if __name__ == "__main__":
    main()
