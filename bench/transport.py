"""Transport latency (issue 8, scenario 1) and staleness of displayed progress (scenario 2).

Run from the project root: ``.venv/bin/python bench/transport.py [--quick] [--layer pubsub|core]``.
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
expected: every message sent to a group with exactly one socket) and its p50/p99; the figures
are the median over rounds (min, max) and the paired per-round ratio project/ceiling.

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
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import summarize, write_results  # noqa: E402
from bench.stack import (  # noqa: E402
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
                    f"{len(lat)}/{count} p50 {percentile(lat, 50):.2f} ms p99 {percentile(lat, 99):.2f} ms",
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
        "| Case | Figure | Runboard | Ceiling | Ratio (paired per round) | Target | Met? |",
        "|---|---|---|---|---|---|---|",
    ]
    verdict: dict[str, Any] = {"delivery": [], "targets": []}
    for case in results["transport"]["cases"]:
        by = {v: [x for x in case["rounds"] if x["variant"] == v] for v in ("p", "c")}
        pairs = list(zip(by["p"], by["c"], strict=True))
        delivered = {v: sum(x["received"] for x in by[v]) / max(1, sum(x["sent"] for x in by[v])) for v in by}
        verdict["delivery"].append({"case": case["name"], **{k: delivered[k] for k in delivered}})
        for q, limit in (("p50", 1.5), ("p99", 2.0)):
            ratios = [p[f"{q}_ms"] / c[f"{q}_ms"] for p, c in pairs if c[f"{q}_ms"] > 0]
            ok = bool(ratios) and median(ratios) <= limit
            verdict["targets"].append({"case": case["name"], "figure": q, "ok": ok})
            rows.append(
                f"| {case['name']} | {q} latency (ms) | {fmt([x[f'{q}_ms'] for x in by['p']])} | "
                f"{fmt([x[f'{q}_ms'] for x in by['c']])} | {fmt(ratios)} | <= {limit}x ceiling | {met(ok)} |"
            )
        pooled = {v: [lat for x in by[v] for lat in x["latencies_ms"]] for v in by}
        rows.append(
            f"| {case['name']} | p99 over all rounds pooled / max (ms) | "
            f"{percentile(pooled['p'], 99):.3g} / {max(pooled['p'], default=0):.3g} | "
            f"{percentile(pooled['c'], 99):.3g} / {max(pooled['c'], default=0):.3g} | - | - | - |"
        )
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
            ("age of a value at receipt p50 (ms)", "age_at_receipt_p50_ms", "-", None),
            ("age of a value at receipt p99 (ms)", "age_at_receipt_p99_ms", "-", None),
            ("updates displayed per second", "updates_per_s", "-", None),
            ("final state after the job's end (ms)", "final_ms", "<= 50 ms", okfinal),
            ("progress calls made by the job", "steps", "-", None),
        ):
            srows.append(
                f"| {label} | {fmt([x[key] for x in rb])} | {fmt([x[key] for x in cp])} | {target} | "
                f"{'-' if ok is None else met(ok)} |"
            )
        srows.append(
            f"| final state delivered | {finals}/{len(rb)} | "
            f"{sum(x['final_received'] for x in cp)}/{len(cp)} | 100% | {met(okdel)} |"
        )
    errors = results["transport"]["client_errors"] + (st["client_errors"] if st else [])
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
        "`time.time_ns()` at receipt - `time.time_ns()` at the push call site (in the payload). Figures: "
        "median over rounds (min, max, n); ratios are project/ceiling per round pair, then the median."
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
            *(["### Scenario 2: staleness of displayed progress", "", *srows, ""] if srows else []),
            f"Client errors: {len(errors)}{(': ' + '; '.join(errors[:5])) if errors else ''}. "
            f"Failed publishes: {results['transport']['publish_failed']}.",
        ]
    )
    verdict["client_errors"] = len(errors)
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
    parser.add_argument("--results-dir", default=None, help="default bench/results ($BENCH_RESULTS_DIR)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.staleness_runs = args.staleness_runs or (1 if args.quick else 4)
    args.job_seconds = args.job_seconds or (1.0 if args.quick else 3.0)
    set_results_dir(args.results_dir)

    started = time.monotonic()
    with bench_stack(layer=args.layer) as stack:
        web = stack.web()
        results: dict[str, Any] = {"layer": args.layer, "transport": transport(stack, args, web)}
        if not args.skip_staleness:
            results["staleness"] = staleness(stack, args, web)
        results["server_errors"] = stack.error_lines(web)
    body, verdict = report(results, args)
    body += f"\n\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}."
    print(body)
    name = "transport" if args.layer == "pubsub" else f"transport-{args.layer}"
    if not args.no_write:
        title = f"Transport latency and staleness ({args.layer} layer)"
        print(f"wrote {write_results(name, title, body)}")
        write_json(
            name, {"verdict": verdict, "server_errors": results["server_errors"][:20], "quick": args.quick}
        )


if __name__ == "__main__":
    main()
