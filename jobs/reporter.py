"""The progress reporter a job kind writes through (its ``ctx``, jobs/context.py, wraps one).

``ctx.progress()`` only records the latest state in memory; publishing is coalesced to at most
one push per ``RUNBOARD_PUSH_INTERVAL`` per job (made inline when due, or by a pump thread
when the job goes quiet), and the database gets a heartbeat at most once per
``RUNBOARD_HEARTBEAT_INTERVAL`` while progress changes, and at least once per
``RUNBOARD_HEARTBEAT_MAX_SILENCE`` regardless, so the reaper can tell a slow step from a
dead worker. The heartbeat also brings back a cancel request. Log lines are buffered and
written by the pump. Final states are written by jobs.states, pushed immediately.

Versions: each push carries ``row_version * VERSION_STEP + n`` where n counts pushes since the
row was last written. Every heartbeat writes the row (bumping its version), so a snapshot read
from the database and a push from memory always compare correctly, whichever process wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from django.db import close_old_connections, connection

from dashboard.process_local import ProcessLocal
from jobs.conf import app_settings
from notifications import events
from notifications.push import push_event

from .models import Job
from .selectors import VERSION_STEP, job_payload, job_payload_progressed, progress_rate
from .states import job_add_progress, job_heartbeat, job_log_append

logger = logging.getLogger(__name__)

Progress = tuple[int, int | None, str]
# What a heartbeat returns: the row's new version and whether a cancel was requested.
Beat = tuple[int, bool]
LOG_LINE_MAX = 2000


class ProgressReporter:
    def __init__(
        self,
        *,
        job: Job,
        push_interval: float | None = None,
        heartbeat_interval: float | None = None,
        max_silence: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        publish: Callable[[events.JobPayload], None] | None = None,
        heartbeat: Callable[[Progress], Beat | None] | None = None,
        write_log: Callable[[Sequence[str]], None] | None = None,
        pump: bool = True,
    ) -> None:
        self.job_id = job.id
        self.push_interval = app_settings.PUSH_INTERVAL if push_interval is None else push_interval
        self.heartbeat_interval = (
            app_settings.HEARTBEAT_INTERVAL if heartbeat_interval is None else heartbeat_interval
        )
        self.max_silence = app_settings.HEARTBEAT_MAX_SILENCE if max_silence is None else max_silence
        self._clock = clock
        self._groups = events.job_update_groups(job.owner_id)
        self._publish = publish or self._publish_to_owner
        self._heartbeat = heartbeat or self._heartbeat_to_db
        self._write_log = write_log or self._write_log_to_db
        self._job = job
        self._base_payload: events.JobPayload | None = None  # built at the first push
        self._started_ts = job.started_at.timestamp() if job.started_at else time.time()
        self._lock = threading.Lock()
        self._closed = False

        self._state: Progress = (job.progress_current, job.progress_total, job.progress_message)
        self._dirty = False  # changed since the last push
        self._unsaved = False  # changed since the last heartbeat
        self._row_version = job.version
        self._seq = 0
        now = clock()
        # The job's state change (``running``) was just pushed with this very state: the interval
        # to the next push starts now. A first ``progress()`` pushed at once repeated it a few
        # milliseconds later, for every job (issue 15 §3: three group sends and a payload built
        # per job; a zero-step job now makes none), and the pump pushes what is due after it.
        self._next_push = now + self.push_interval
        self._last_heartbeat = now
        self._log: deque[str] = deque(maxlen=app_settings.LOG_LINES_KEPT)
        self._log_lock = threading.Lock()
        self.cancelled = job.cancel_requested_at is not None
        self.pushes = 0
        self.heartbeats = 0
        if pump:
            _pump().add(self)

    # Called by the job, possibly millions of times: keep it to a few attribute writes.
    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        state = self._state
        self._state = (
            current,
            state[1] if total is None else total,
            state[2] if message is None else message,
        )
        self._dirty = True
        if self._clock() >= self._next_push:
            self._push_if_free()

    def log(self, line: object) -> None:
        # Bounded: a job that logs faster than the pump writes keeps only the newest lines.
        self._log.append(str(line)[:LOG_LINE_MAX])

    def _push_if_free(self) -> None:
        """The job's own thread: push if due, but never wait. If the pump holds the lock, it will
        push the pending state itself within half a push interval."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = self._clock()
            if not self._closed and self._dirty and now >= self._next_push:
                self._push(now)
        finally:
            self._lock.release()

    def tick(self) -> None:
        """From the pump: push if due, then write logs and a heartbeat if due.

        Database writes happen outside the lock, so the job's thread never waits on one (a
        locked SQLite or a slow PostgreSQL would otherwise stall ``progress()``).
        """
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if self._dirty and now >= self._next_push:
                self._push(now)
            since = now - self._last_heartbeat
            beat_due = (self._unsaved and since >= self.heartbeat_interval) or since >= self.max_silence
            # Due for liveness alone: nothing may have been pushed for max_silence either.
            quiet = since >= self.max_silence
            if beat_due:
                self._last_heartbeat = now
                self._unsaved = False
            state = self._state
        self._flush_log()
        if beat_due:
            self._beat(state, quiet=quiet)

    def close(self) -> Progress:
        """Stop reporting (the final state is written by the caller); returns the last progress."""
        with self._lock:
            self._closed = True
        _pump().discard(self)
        self._flush_log()
        return self._state

    @property
    def state(self) -> Progress:
        return self._state

    @property
    def _base(self) -> events.JobPayload:
        """The job's payload as it started, which each push updates (built when first needed: a
        short job may never push)."""
        if self._base_payload is None:
            self._base_payload = job_payload(self._job)
        return self._base_payload

    def _push(self, now: float) -> None:
        if self._seq >= VERSION_STEP - 1:
            # Heartbeats are failing (database down): no room for a newer version until one
            # lands. Keep the fast path fast meanwhile.
            self._next_push = now + self.push_interval
            return
        self._seq += 1
        self._dirty = False
        self._unsaved = True
        self._next_push = now + self.push_interval
        current, total, _ = state = self._state
        try:
            rate, eta = progress_rate(current, total, self._started_ts, time.time())
        except (TypeError, ValueError, ArithmeticError):
            rate, eta = None, None  # counters that are not numbers: shown as 0, no rate
        # Whatever the kind passed (a huge message, a huge number), the push stays bounded.
        payload = job_payload_progressed(
            self._base,
            progress=state,
            version=self._row_version * VERSION_STEP + self._seq,
            cancel_requested=self.cancelled,
            rate=rate,
            eta=eta,
        )
        self.pushes += 1
        self._publish(payload)

    def _beat(self, state: Progress, *, quiet: bool = False) -> None:
        """Write a heartbeat (outside the lock), then adopt the row's new version (inside it).

        Pushes made while the write is in flight still carry the old row version, so they sort
        before anything read from the row afterwards; the next push carries the new one.
        """
        try:
            beat = self._heartbeat(state)
        except Exception:
            logger.warning("Heartbeat for job %s failed; will retry", self.job_id, exc_info=True)
            with self._lock:
                self._unsaved = True
            return
        with self._lock:
            self.heartbeats += 1
            if beat is None:
                # No longer running (cancelled while queued, reaped, finished elsewhere): stop.
                self.cancelled = True
                return
            version, cancel_requested = beat
            if version > self._row_version:
                self._row_version = version
                self._seq = 0
                self._base["version"] = version * VERSION_STEP
            if cancel_requested and not self.cancelled:
                self.cancelled = True
                self._base["cancel_requested"] = True
                self._dirty = True  # show "cancelling" promptly
            if self._state != state:
                self._dirty = True  # progress moved during the write: push it on the new version
            if quiet:
                # A job that reports nothing is still alive: a push says so, or clients, which
                # count a job's silence from the last payload they got, would show it stalled.
                self._dirty = True

    def _flush_log(self) -> None:
        """Write the buffered lines, in order. Flushes are serialized by their own lock, which the
        job's thread never takes (``log()`` only appends), so it never waits on this write."""
        with self._log_lock:
            lines = []
            while True:
                try:
                    lines.append(self._log.popleft())  # atomic: a line appended meanwhile stays queued
                except IndexError:
                    break
            if not lines:
                return
            try:
                self._write_log(lines)
            except Exception:
                logger.warning(
                    "Could not write %d log lines of job %s", len(lines), self.job_id, exc_info=True
                )

    def _publish_to_owner(self, payload: events.JobPayload) -> None:
        push_event(group=self._groups, event=events.job_update(payload))

    def _heartbeat_to_db(self, progress: Progress) -> Beat | None:
        current, total, message = progress
        return job_heartbeat(job_id=self.job_id, current=current, total=total, message=message)

    def _write_log_to_db(self, lines: Sequence[str]) -> None:
        job_log_append(job_id=self.job_id, lines=lines)


class ChunkReporter(ProgressReporter):
    """Progress of one chunk of a parallel job, added into the job's single aggregate.

    ``progress(current)`` is within the chunk; each heartbeat adds the delta since the last one
    to the job row (a constant-cost UPDATE, whatever the number of chunks) and pushes the
    aggregate it reads back.
    """

    def __init__(self, *, job: Job, **kwargs: Any) -> None:
        super().__init__(job=job, **kwargs)
        self._state = (0, None, "")
        self._reported = 0
        self.heartbeat_interval = max(self.push_interval, 0.25)

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        state = self._state
        self._state = (
            current,
            state[1] if total is None else total,
            state[2] if message is None else message,
        )
        self._unsaved = True

    def _push(self, now: float) -> None:
        self._dirty = False  # pushes happen from _beat, with the aggregate the database returns

    def _beat(self, state: Progress, *, quiet: bool = False) -> None:
        # Every beat pushes the aggregate it reads back, quiet or not: a sign of life either way.
        with self._lock:
            current = state[0]
            delta, self._reported = current - self._reported, current
        try:
            job = job_add_progress(job_id=self.job_id, delta=delta)
        except Exception:
            with self._lock:
                self._reported -= delta
                self._unsaved = True
            logger.warning("Chunk heartbeat for job %s failed; will retry", self.job_id, exc_info=True)
            return
        self.heartbeats += 1
        if job is None:
            self.cancelled = True  # the job ended (a chunk failed, cancelled, reaped): stop
        else:
            self.cancelled = job.cancel_requested_at is not None
            self.pushes += 1
            self._publish(job_payload(job))

    def close(self) -> Progress:
        with self._lock:
            pending = not self._closed and self._state[0] != self._reported
            state = self._state
        if pending:
            self._beat(state)
        return super().close()


class _Pump(threading.Thread):
    """Per process: flushes reporters that went quiet and keeps heartbeats going during long steps."""

    def __init__(self) -> None:
        super().__init__(name="runboard-progress-pump", daemon=True)
        self._reporters: set[ProgressReporter] = set()
        self._lock = threading.Lock()
        self._work = threading.Event()
        self.interval = max(0.01, app_settings.PUSH_INTERVAL / 2)

    def add(self, reporter: ProgressReporter) -> None:
        with self._lock:
            self._reporters.add(reporter)
        self._work.set()

    def discard(self, reporter: ProgressReporter) -> None:
        with self._lock:
            self._reporters.discard(reporter)

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                reporters = list(self._reporters)
                if not reporters:
                    self._work.clear()
            if not reporters:
                # Don't hold a database connection open between jobs, and sleep until the next.
                if connection.connection is not None:
                    connection.close()
                self._work.wait()
                continue
            close_old_connections()
            for reporter in reporters:
                try:
                    reporter.tick()
                except Exception:
                    logger.exception("Progress pump failed for job %s", reporter.job_id)


def _start_pump() -> _Pump:
    pump = _Pump()
    pump.start()
    return pump


_pumps: ProcessLocal[_Pump] = ProcessLocal(_start_pump)


def _pump() -> _Pump:
    return _pumps.get()
