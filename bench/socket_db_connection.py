"""The sockets' kept database connection, measured (issue 15 §2; dashboard/db.py).

Run from the project root: ``.venv/bin/python bench/socket_db_connection.py [--storm 1000]
[--rounds 3] [--quick]``. Writes bench/results/socket_db_connection.md and .json.

The sign-in storm of bench/sockets_memory.py (M clients at once, 10 per user, users with 50
finished jobs and 20 notifications, each waiting for ``hello`` + ``snapshot``), on a fresh uvicorn
each time, with ``RUNBOARD_SOCKET_DB_CONN_MAX_AGE=60`` (the default: the consumers' one database
thread keeps its connection) and ``=0`` (a connection per call, as before), alternating which goes
first round by round, and the bare consumer once a round. Reported per setting: server CPU per
connect (ms), time until the last client was in or gave up (s), and clients in. Not a target: the
figure the docs quote for what keeping that connection saves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import summarize, write_results  # noqa: E402
from bench.sockets_memory import add_history, storm_round  # noqa: E402
from bench.stack import (  # noqa: E402
    bench_stack,
    ceiling_socket,
    make_users,
    project_socket,
    set_results_dir,
    write_json,
)
from scripts.harness import WebServer  # noqa: E402

SETTINGS = {"kept (60 s)": "60", "per call (0)": "0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--storm", type=int, default=None, help="clients at once (default 1000; quick 100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results-dir", default=None, help="default bench/results ($BENCH_RESULTS_DIR)")
    args = parser.parse_args()
    m = args.storm or (100 if args.quick else 1000)
    rounds = 1 if args.quick else args.rounds
    set_results_dir(args.results_dir)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in [*SETTINGS, "bare consumer"]}
    with bench_stack() as stack:
        users = make_users(m // 10 + 1, prefix="conn")
        add_history(users)
        specs = [project_socket(users[1 + i // 10]) for i in range(m)]
        replace = {"dashboard.asgi:application": "bench.asgi_bench:application"}
        for r in range(rounds):
            order = list(SETTINGS.items())
            for name, age in order if r % 2 == 0 else order[::-1]:
                env = {**stack.child_env, "RUNBOARD_SOCKET_DB_CONN_MAX_AGE": age}
                web = WebServer(
                    env, log_dir=stack.log_dir, name=f"web-conn-{age}-{r}", replace=replace, many_files=True
                )
                stack.started.append(web)
                rows[name].append(storm_round(stack, web, specs, project_socket(users[0]), f"conn-{age}-{r}"))
                x = rows[name][-1]
                print(f"  [{name} round {r}] {x['opened']}/{m} in {x['elapsed_s']:.2f} s, "
                      f"{x['cpu_ms_per_connect']:.2f} CPU ms per connect", flush=True)  # fmt: skip
            bare = [ceiling_socket(f"conn{i}") for i in range(m)]
            rows["bare consumer"].append(
                storm_round(
                    stack, stack.web(name=f"web-conn-bare-{r}"), bare, ceiling_socket("warm"), f"bare-{r}"
                )
            )

    table = ["| Setting | CPU per connect (ms) | Storm (s) | Clients in |", "|---|---|---|---|"]
    for name, xs in rows.items():
        clients_in = ", ".join(f"{x['opened']:,}/{m:,}" for x in xs)
        table.append(
            f"| {name} | {summarize([x['cpu_ms_per_connect'] for x in xs], '.1f')} | "
            f"{summarize([x['elapsed_s'] for x in xs], '.1f')} | "
            f"{clients_in} |"
        )
    body = (
        f"{m:,} signed-in clients at once (10 per user; 50 jobs and 20 notifications each), "
        f"{rounds} round(s), the two settings alternating which goes first. A client gives up "
        "after the harness' open timeout; 'Storm' is until the last was in or gave up.\n\n" + "\n".join(table)
    )
    write_results("socket_db_connection", "The sockets' kept database connection", body)
    write_json("socket_db_connection", {"storm": m, "rows": rows})


if __name__ == "__main__":
    main()
