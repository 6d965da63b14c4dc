"""Scenario 15 (issue 15 §4): reads that do not grow with history.

    .venv/bin/python bench/history.py [--sizes 1000,100000,1000000] [--sqlite-sizes 1000,100000]
                                      [--rounds 7] [--reps 15] [--big-unread 20000] [--quick]
                                      [--no-write]

Builds one PostgreSQL database per size (throwaway, on the server `make test` uses: a migrated
template copied with CREATE DATABASE ... TEMPLATE, then filled by INSERT ... SELECT FROM
generate_series, then VACUUM ANALYZE as autovacuum would), all with the same 1,000 users and one
staff superuser. History is what grows: N jobs at a steady 120 an hour (so 1,000,000 jobs are
~347 days and 1,000 jobs ~8 hours: the last hour holds about as many finished jobs at every
size), one user ("heavy") owning 10 % of them, the rest spread over the others; kinds weighted
(simulate 40 %, csv_profile 25 %, export_jobs 15 %, primes 15 %, broadcast 5 %); states: the
same 50 queued and 20 running (2 of them stalled) at every size, the finished ones 87 %
succeeded, 12 % failed, 1 % cancelled (failures that common so that a list filtered to failed
jobs fills its page at 1,000 jobs too: a baseline page of 35 rows against pages of 100 measured
the page, not history); one completion notification per finished job, each user's newest 5
unread, the rest read; the unread counters exact.

Then it times each read through the code the product runs (Django's test client for the views,
the selectors and services the consumer calls otherwise), in rounds: every round visits every
size and warms each read once, then takes ``--reps`` timings of each read at every size, the
sizes interleaved call by call in a rotating order (one open connection per database, swapped
in); the figure per read and size is the median of the round medians (min-max over rounds),
and the ratio largest/smallest is taken within each round (median, min-max), so the machine's
load (2 shared cores) hits the sizes alike. No percentile is printed.

Reads: the staff job list (``GET /api/v1/jobs/``, and with ``?state=failed``); the staff connect
snapshot (``notifications.realtime.snapshot.catch_up_step`` with no resume point, what a socket's
connect sends); a user's connect snapshot (the heavy user); the operator overview
(``dashboard.operator.operator_snapshot``, with the Celery worker broadcast stubbed: a fixed
1 s wait for replies that no database size changes); ``GET /metrics``; the admin job list
(``/admin/jobs/job/``, and filtered by state); the running count behind launch limits
(``jobs.selectors.running_count`` for the heavy user); mark-all-read
(``notifications.inbox.notification_mark_all_read`` for the heavy user with 200 unread, restored
by SQL outside the timing before each call). Also, once per size large enough, mark-all-read
with ``--big-unread`` unread (a cost of the rows it marks, not of history) and the size of the
``notification.read`` event it publishes.

Then the same on SQLite (the local default) at ``--sqlite-sizes``, in a process of its own, for
information: a copy of a migrated file per size, no ANALYZE (Django never runs one).

Target: each read at the largest size within 1.5x of its time at the smallest, on PostgreSQL.
Writes ``bench/results/history.json`` and ``bench/results/history.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.support import bench_environment, postgres_server_url

SCENARIO = "15. Reads at scale"
TARGET_RATIO = 1.5
USERS = 1000
HEAVY_SHARE = 10  # every 10th job is the heavy user's
QUEUED, RUNNING, STALLED = 50, 20, 2
UNREAD_PER_USER = 5
MARK_ALL_UNREAD = 200
JOBS_PER_HOUR = 120

# (kind, cumulative weight in percent)
KINDS = [("simulate", 40), ("csv_profile", 65), ("export_jobs", 80), ("primes", 95), ("broadcast", 100)]


def _kind_sql(expr: str) -> str:
    cases = " ".join(f"WHEN {expr} < {upper} THEN '{name}'" for name, upper in KINDS)
    return f"CASE {cases} END"


class Dialect:
    """The few expressions that differ between PostgreSQL and SQLite in the fill statements."""

    def __init__(self, vendor: str) -> None:
        self.pg = vendor == "postgresql"

    def ago(self, seconds: str) -> str:
        """A timestamp ``seconds`` (an SQL expression) before now, as Django stores it."""
        if self.pg:
            return f"now() - make_interval(secs => ({seconds})::float8)"
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({seconds}) || ' seconds')"

    def later(self, column: str, minutes: int) -> str:
        if self.pg:
            return f"{column} + interval '{minutes} minutes'"
        return f"strftime('%Y-%m-%d %H:%M:%f', {column}, '+{minutes} minutes')"

    def json(self, text: str) -> str:
        return f"'{text}'::jsonb" if self.pg else f"'{text}'"

    def uuid(self) -> str:
        return "gen_random_uuid()" if self.pg else "lower(hex(randomblob(16)))"

    def series(self, n: int) -> tuple[str, str]:
        """(a prefix for the statement, the FROM item) giving g = 1 .. n."""
        if self.pg:
            return "", f"generate_series(1::bigint, {n}) AS g"
        return f"WITH RECURSIVE seq(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM seq WHERE g < {n}) ", "seq"


def fill_sql(n: int, vendor: str = "postgresql") -> list[str]:
    """The statements that fill an empty migrated database with ``n`` jobs (see the module
    docstring); users and the staff user exist already."""
    d = Dialect(vendor)
    active = QUEUED + RUNNING
    # g = 1 .. n, oldest first; the newest `active` jobs are the queued and running ones.
    hash_ = "((g * 2654435761) % 1000)"  # a fixed spread over 0..999 (Knuth's multiplier)
    state = (
        f"CASE WHEN g > {n} - {QUEUED} THEN 'queued' WHEN g > {n} - {active} THEN 'running' "
        f"WHEN {hash_} < 870 THEN 'succeeded' WHEN {hash_} < 990 THEN 'failed' ELSE 'cancelled' END"
    )
    age = f"(({n} - g) * {3600 // JOBS_PER_HOUR} + 60)"  # seconds before now it was created
    owner = (
        f"CASE WHEN g % {HEAVY_SHARE} = 0 THEN (SELECT id FROM auth_user WHERE username = 'heavy') "
        f"ELSE (SELECT min(id) FROM auth_user) + 1 + ((g * 7919) % {USERS - 1}) END"
    )
    prefix, series = d.series(n)
    return [
        f"""
        {prefix}INSERT INTO jobs_job (
            id, owner_id, kind, params, state, progress_current, progress_total, progress_message,
            version, created_at, started_at, finished_at, heartbeat_at, enqueued_at, traceback,
            admitted_at, wait_code, wait_note, wait_position, celery_task_id, result, result_summary,
            result_summary_complete, result_bytes, result_file, error, cancel_requested_at, attempts,
            max_attempts, retry_at, attempt_errors, retry_of_id, chunks_total, schedule_id
        )
        SELECT
            {d.uuid()}, owner, kind, {d.json('{"steps": 20}')}, state,
            CASE WHEN state = 'queued' THEN 0 ELSE 20 END, 20, '', 3, {d.ago("age")},
            CASE WHEN state = 'queued' THEN NULL ELSE {d.ago("age - 2")} END,
            CASE WHEN state IN ('queued', 'running') THEN NULL ELSE {d.ago("age - 25")} END,
            CASE WHEN state = 'running' AND g <= {n} - {active} + {STALLED} THEN {d.ago("3600")}
                 WHEN state = 'running' THEN {d.ago("1")}
                 WHEN state = 'queued' THEN NULL ELSE {d.ago("age - 25")} END,
            {d.ago("age")}, '', CASE WHEN state = 'queued' THEN NULL ELSE {d.ago("age")} END, '', '',
            NULL, '', NULL, CASE WHEN state = 'succeeded' THEN {d.json('{"items": 20}')} END,
            state = 'succeeded', CASE WHEN state = 'succeeded' THEN 14 END, '',
            CASE WHEN state = 'failed' THEN 'ValueError: step 7 failed' ELSE '' END,
            CASE WHEN state = 'cancelled' THEN {d.ago("age - 20")} END,
            CASE WHEN state = 'queued' THEN 0 ELSE 1 END, 1, NULL, {d.json("[]")}, NULL, 0, NULL
        FROM (
            SELECT g, {owner} AS owner, {_kind_sql("((g * 40503) % 100)")} AS kind,
                   {state} AS state, {age} AS age
            FROM {series}
        ) AS spread
        ORDER BY g
        """,
        # One completion notification per finished job, in finish order (ids grow with time).
        f"""
        INSERT INTO notifications_notification (recipient_id, level, title, body, link, job_id,
                                                created_at, read_at)
        SELECT owner_id,
               CASE state WHEN 'succeeded' THEN 'success' WHEN 'failed' THEN 'error' ELSE 'info' END,
               kind || ' ' || state, '', '/jobs/' || id || '/', id, finished_at,
               {d.later("finished_at", 5)}
        FROM jobs_job WHERE state IN ('succeeded', 'failed', 'cancelled') ORDER BY finished_at, id
        """,
        f"""
        UPDATE notifications_notification SET read_at = NULL WHERE id IN (
            SELECT id FROM (
                SELECT id, row_number() OVER (PARTITION BY recipient_id ORDER BY id DESC) AS k
                FROM notifications_notification
            ) AS ranked WHERE k <= {UNREAD_PER_USER}
        )
        """,
        """
        INSERT INTO notifications_notificationstate (user_id, unread_count)
        SELECT recipient_id, count(*) FILTER (WHERE read_at IS NULL)
        FROM notifications_notification GROUP BY recipient_id
        """,
    ]


def users_sql(vendor: str = "postgresql") -> list[str]:
    d = Dialect(vendor)
    prefix, series = d.series(USERS)
    return [
        f"""
        {prefix}INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        SELECT '!', false, CASE WHEN g = 1 THEN 'heavy' ELSE 'user' || g END, '', '', '', false,
               true, {d.ago(str(2 * 365 * 86400))}
        FROM {series}
        """
    ]


# --- Databases ---------------------------------------------------------------------------------


def _admin_connect(server: str) -> Any:
    import psycopg

    return psycopg.connect(server + "/postgres", autocommit=True)


@contextlib.contextmanager
def size_databases(vendor: str, template: str, sizes: list[int]) -> Iterator[dict[int, str]]:
    """One database per size, copied from ``template`` (migrated, with the users) and filled;
    dropped on exit. PostgreSQL: CREATE DATABASE ... TEMPLATE on the same server, then VACUUM
    ANALYZE (what autovacuum leaves); SQLite: a copy of the file, no ANALYZE (Django never runs
    one, so SQLite plans without statistics)."""
    import sqlite3

    from django.db import connections

    server = postgres_server_url() if vendor == "postgresql" else None
    names = {n: f"{template}_h{n}" for n in sizes}
    if vendor == "sqlite":
        names = {n: str(Path(template).with_name(f"history_{n}.sqlite3")) for n in sizes}
    connections.close_all()
    try:
        for n, name in names.items():
            started = time.monotonic()
            if server is not None:
                import psycopg

                with _admin_connect(server) as admin:
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                with psycopg.connect(f"{server}/{name}", autocommit=True) as db:
                    for statement in fill_sql(n, vendor):
                        db.execute(statement)
                    db.execute("VACUUM ANALYZE")
            else:
                shutil.copyfile(template, name)
                with contextlib.closing(sqlite3.connect(name)) as db:
                    for statement in fill_sql(n, vendor):
                        db.execute(statement)
                    db.commit()
            print(f"  built {n:,} jobs ({vendor}) in {time.monotonic() - started:.1f} s", flush=True)
        yield names
    finally:
        connections.close_all()
        if server is not None:
            with _admin_connect(server) as admin:
                for name in names.values():
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_WRAPPERS: dict[str, Any] = {}


def use_database(name: str) -> None:
    """Make database ``name`` (same server, or a SQLite file) Django's default connection: one
    connection kept open per database and swapped in (no reconnect), so the sizes can be
    interleaved call by call."""
    from django.db import connections
    from django.db.utils import load_backend

    wrapper = _WRAPPERS.get(name)
    if wrapper is None:
        settings = {**connections.settings["default"], "NAME": name}
        wrapper = _WRAPPERS[name] = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "default")
    connections["default"] = wrapper


def close_databases() -> None:
    for wrapper in _WRAPPERS.values():
        wrapper.close()
    _WRAPPERS.clear()


# --- The reads -----------------------------------------------------------------------------------


def reads(client: Any, staff: Any, heavy: Any) -> dict[str, Callable[[], Any]]:
    """Each read as the product runs it, for the current database."""
    from django.db import connection

    from dashboard import operator
    from jobs import selectors
    from notifications import inbox
    from notifications.realtime import snapshot

    def get(path: str) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            return response

        return call

    def unread_again() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE notifications_notification SET read_at = NULL WHERE id IN (SELECT id FROM "
                "notifications_notification WHERE recipient_id = %s ORDER BY id DESC LIMIT %s)",
                [heavy.pk, MARK_ALL_UNREAD],
            )
            cursor.execute(
                "UPDATE notifications_notificationstate SET unread_count = %s WHERE user_id = %s",
                [MARK_ALL_UNREAD, heavy.pk],
            )

    def mark_all_read() -> Any:
        return inbox.notification_mark_all_read(user_id=heavy.pk)

    return {
        "staff job list (GET /api/v1/jobs/)": get("/api/v1/jobs/"),
        "staff job list, state=failed": get("/api/v1/jobs/?state=failed"),
        "staff connect snapshot": lambda: snapshot.catch_up_step(user=staff, after_id=None, sent_up_to=0),
        "a user's connect snapshot (10 % of the jobs)": lambda: snapshot.catch_up_step(
            user=heavy, after_id=None, sent_up_to=0
        ),
        "operator overview": operator.operator_snapshot,
        "GET /metrics": get("/metrics"),
        "admin job list": get("/admin/jobs/job/"),
        "admin job list, state=failed": get("/admin/jobs/job/?state__exact=failed"),
        "running count (launch limits)": lambda: selectors.running_count(owner_id=heavy.pk),
        f"mark all read ({MARK_ALL_UNREAD} unread)": (unread_again, mark_all_read),  # type: ignore[dict-item]
    }


def time_call(read: Any) -> float:
    """Milliseconds one call of ``read`` takes (a ``(prepare, call)`` pair: ``prepare`` untimed)."""
    if isinstance(read, tuple):
        read[0]()
        read = read[1]
    started = time.perf_counter_ns()
    read()
    return (time.perf_counter_ns() - started) / 1e6


def big_mark_all_read(heavy: Any, unread: int, *, exact: bool = True) -> tuple[float, int, int] | None:
    """Mark-all-read with ``unread`` unread (set by SQL first): ms, the marked rows, and the
    ``notification.read`` event's bytes; None when the heavy user has fewer notifications
    (``exact``; else all of theirs are marked)."""
    from django.db import connection

    from notifications import events, inbox

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_notification SET read_at = NULL WHERE id IN (SELECT id FROM "
            "notifications_notification WHERE recipient_id = %s ORDER BY id DESC LIMIT %s)",
            [heavy.pk, unread],
        )
        marked = cursor.rowcount
        cursor.execute(
            "UPDATE notifications_notificationstate SET unread_count = %s WHERE user_id = %s",
            [marked, heavy.pk],
        )
    if exact and marked < unread:
        return None
    sent: list[int] = []
    original = inbox.push_event

    def recording(*, group: str, event: Any, **kwargs: Any) -> None:
        sent.append(len(events.dumps(event)))
        original(group=group, event=event, **kwargs)

    inbox.push_event = recording  # type: ignore[assignment]
    try:
        started = time.perf_counter_ns()
        inbox.notification_mark_all_read(user_id=heavy.pk)
        ms = (time.perf_counter_ns() - started) / 1e6
    finally:
        inbox.push_event = original
    return ms, marked, max(sent, default=0)


# --- Main ----------------------------------------------------------------------------------------


def fmt_ms(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def measure(vendor: str, sizes: list[int], rounds: int, reps: int, big_unread: int) -> dict[str, Any]:
    """Build the databases and time every read (see the module docstring); the figures as JSON."""
    with bench_environment(database=vendor):
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test import Client

        from dashboard import operator

        logging.getLogger("axes").setLevel(logging.WARNING)  # a line per force_login
        # The worker broadcast (a fixed wait for Celery replies, no database) is not what grows.
        operator.workers_online = lambda **_: []
        User = get_user_model()
        with connection.cursor() as cursor:
            for statement in users_sql(vendor):
                cursor.execute(statement)
        User.objects.create_superuser("staff", "staff@example.com", "x")
        template = str(connection.settings_dict["NAME"])
        print(f"history ({vendor}): sizes {sizes}, {rounds} rounds x {reps} reps", flush=True)
        with size_databases(vendor, template, sizes) as names:
            clients: dict[int, Any] = {}
            people: dict[int, tuple[Any, Any]] = {}
            for n in sizes:
                use_database(names[n])
                staff, heavy = User.objects.get(username="staff"), User.objects.get(username="heavy")
                clients[n] = Client(HTTP_HOST="localhost")
                clients[n].force_login(staff)
                people[n] = (staff, heavy)
            todo = {n: reads(clients[n], *people[n]) for n in sizes}
            per_round: dict[str, dict[str, list[float]]] = {}
            for r in range(rounds):
                for n in sizes:
                    use_database(names[n])
                    for read in todo[n].values():
                        time_call(read)  # warm: caches, plans
                samples: dict[tuple[str, int], list[float]] = {}
                for rep in range(reps):
                    # Call by call, the sizes in a rotating order: the machine's load (shared,
                    # 2 cores) changes by the second and must hit every size alike.
                    order = sizes[rep % len(sizes) :] + sizes[: rep % len(sizes)]
                    for name in todo[sizes[0]]:
                        for n in order:
                            use_database(names[n])
                            samples.setdefault((name, n), []).append(time_call(todo[n][name]))
                for (name, n), values in samples.items():
                    per_round.setdefault(name, {}).setdefault(str(n), []).append(statistics.median(values))
                print(f"  round {r + 1}/{rounds} done", flush=True)
            big: dict[str, Any] = {}
            small_frames: dict[str, int | None] = {}
            for n in sizes:
                use_database(names[n])
                runs = [big_mark_all_read(people[n][1], big_unread) for _ in range(3)]
                found = [run for run in runs if run is not None]
                big[str(n)] = (
                    (statistics.median(r[0] for r in found), found[0][1], found[0][2]) if found else None
                )
                small = big_mark_all_read(people[n][1], MARK_ALL_UNREAD, exact=False)
                small_frames[str(n)] = small[2] if small else None
            close_databases()
    return {
        "vendor": vendor, "sizes": sizes, "rounds": rounds, "reps": reps, "big_unread": big_unread,
        "reads": per_round, "big_mark_all_read": big, "mark_all_read_frame": small_frames,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--sqlite-sizes", default="1000,100000", help="empty: no SQLite run")
    parser.add_argument("--database", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--big-unread", type=int, default=20000)
    parser.add_argument("--json-out", help="write the figures here and nothing else (the SQLite run)")
    parser.add_argument("--quick", action="store_true", help="sizes 1,000 and 20,000, 2 rounds of 3")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [1000, 20000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    rounds, reps = (2, 3) if args.quick else (args.rounds, args.reps)
    if args.database == "postgresql" and postgres_server_url() is None:
        sys.exit("no PostgreSQL server answers (set TEST_POSTGRES_URL): scenario 15 needs one")
    figures = measure(args.database, sizes, rounds, reps, args.big_unread)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures))
        return
    runs = [figures]
    sqlite_sizes = [1000, 20000] if args.quick else [int(s) for s in args.sqlite_sizes.split(",") if s]
    if sqlite_sizes and args.database == "postgresql":
        # Its own process: Django's database engine is chosen once per process.
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "sqlite.json"
            command = [sys.executable, __file__, "--database", "sqlite", "--json-out", str(out),
                       "--sizes", ",".join(map(str, sqlite_sizes)), "--rounds", str(rounds),
                       "--reps", str(reps), "--big-unread", str(args.big_unread)]  # fmt: skip
            if subprocess.run(command, check=False).returncode == 0:
                runs.append(json.loads(out.read_text()))
            else:
                print("the SQLite run failed: its table is left out", flush=True)
    report(args, runs)


def table(figures: dict[str, Any], *, judged: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """The markdown table of one run, and its summary rows (``judged``: against the target)."""
    sizes = figures["sizes"]
    small, large = str(sizes[0]), str(sizes[-1])
    header = ["Read", *(f"{n:,} jobs (ms)" for n in sizes), f"{sizes[-1]:,}/{sizes[0]:,}", "Target", "Met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = []
    for name, by_size in figures["reads"].items():
        ratios = [b / a for a, b in zip(by_size[small], by_size[large], strict=True)]
        ratio = statistics.median(ratios)
        met = ratio <= TARGET_RATIO
        measured = f"{ratio:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}, n={len(ratios)} rounds)"
        verdict = ("met" if met else "**not met**") if judged else "- (SQLite: for information)"
        cells = [name, *(fmt_ms(by_size[str(n)]) for n in sizes), measured, f"<= {TARGET_RATIO}x", verdict]
        lines.append("| " + " | ".join(cells) + " |")
        if judged:
            metric = f"{name}: {sizes[-1]:,} / {sizes[0]:,} jobs (PostgreSQL)"
            summary.append(common.row(SCENARIO, metric, f"<= {TARGET_RATIO}x", measured, met))
    return lines, summary


def report(args: Any, runs: list[dict[str, Any]]) -> None:
    pg = runs[0]
    lines, summary = table(pg, judged=pg["vendor"] == "postgresql")
    unread = pg["big_unread"]
    big_lines = []
    for n in pg["sizes"]:
        found = pg["big_mark_all_read"].get(str(n))
        frame = pg["mark_all_read_frame"].get(str(n))
        if found is None:
            big_lines.append(
                f"| {n:,} | - (the heavy user has fewer than {unread:,} notifications) | - | {frame} |"
            )
        else:
            big_lines.append(f"| {n:,} | {found[0]:.1f} | {found[2]} | {frame} |")
    body = (
        f"Database: {pg['vendor']}; one database per size, the same 1,000 users + staff in each; "
        f"{pg['rounds']} rounds; in each, every read timed {pg['reps']} times at every size after "
        "one warm-up, the sizes interleaved call by call. Figures: median of the round medians (min-max over "
        "rounds), ms; the ratio is taken within each round, median (min-max). No percentile printed "
        "(fewer than 1,000 samples per cell). The machine has 2 cores shared with other work: "
        "absolute numbers are noisy, ratios less so.\n\n"
        + "\n".join(lines)
        + f"\n\nMark all read with {unread:,} unread (median of 3; its cost is the rows it marks, not "
        "history) and the size of the `notification.read` event it publishes, in bytes, with "
        f"{unread:,} and with {MARK_ALL_UNREAD} unread:\n\n"
        f"| Jobs | ms ({unread:,} unread) | event bytes ({unread:,} unread) "
        f"| event bytes ({MARK_ALL_UNREAD} unread) |\n"
        "|---|---|---|---|\n" + "\n".join(big_lines) + "\n"
    )
    for other in runs[1:]:
        other_lines, _ = table(other, judged=False)
        body += (
            "\nSQLite (the local default; no statistics, so no estimates: its counts stay exact and "
            "grow), same data and rounds:\n\n" + "\n".join(other_lines) + "\n"
        )
    print(body)
    if args.no_write:
        return
    (common.RESULTS_DIR / "history.json").write_text(json.dumps(runs, indent=1))
    path = common.write_results("history", "Reads at scale (issue 15 §4)", body, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
