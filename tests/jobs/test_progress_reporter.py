"""The reporter coalesces: however often a job reports, clients get ~10 pushes a second."""

import pytest

from jobs.models import JobState
from jobs.reporter import ProgressReporter
from jobs.selectors import VERSION_STEP
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def recorder(make_user):
    """A reporter over a real running job whose pushes and heartbeats are captured, on a fake clock."""
    job = make_job(owner=make_user(), state=JobState.RUNNING)
    clock = FakeClock()
    pushes, beats, timeline = [], [], []
    version = {"row": job.version, "cancel": False}

    def publish(payload):
        pushes.append(payload)
        timeline.append(payload["version"])

    def heartbeat(progress):
        beats.append((clock.now, progress))
        version["row"] += 1
        timeline.append(version["row"] * VERSION_STEP)  # what a snapshot read now would carry
        return version["row"], version["cancel"]

    reporter = ProgressReporter(
        job=job, push_interval=0.1, heartbeat_interval=1.0, max_silence=5.0, clock=clock,
        publish=publish, heartbeat=heartbeat, pump=False,
    )  # fmt: skip
    reporter.timeline = timeline
    reporter.fake_row = version
    return reporter, clock, pushes, beats


def test_a_million_progress_calls_make_at_most_ten_pushes_a_second(recorder):
    reporter, clock, pushes, _ = recorder
    reporter.heartbeat_interval = reporter.max_silence = float("inf")
    for i in range(1_000_000):
        clock.now += 2e-6  # a million calls spread over two seconds
        reporter.progress(i, 1_000_000)

    assert 18 <= len(pushes) <= 21


def test_the_final_state_is_always_pushed(recorder):
    reporter, clock, pushes, _ = recorder
    clock.now += 0.1  # the push interval that began with the start (its own push) is over
    reporter.progress(1, 10)
    for step in range(2, 11):
        clock.now += 0.001
        reporter.progress(step, 10, f"step {step}")
    assert pushes[-1]["progress"]["current"] == 1  # coalesced: the rest waits for the interval

    clock.now += 0.1
    reporter.tick()  # what the pump thread does when the job goes quiet

    assert pushes[-1]["progress"] == {"current": 10, "total": 10, "message": "step 10"}
    assert reporter.close() == (10, 10, "step 10")


def test_pushed_versions_strictly_increase_across_heartbeats(recorder):
    reporter, clock, _, beats = recorder
    for i in range(50):
        clock.now += 0.11
        reporter.progress(i, 50)
        reporter.tick()

    assert len(beats) >= 4
    # Pushes interleaved with what a snapshot read from the row would carry after each heartbeat:
    # the whole timeline must strictly increase, or a client would drop a newer state.
    assert reporter.timeline == sorted(set(reporter.timeline)), reporter.timeline


def test_heartbeats_are_rate_limited_but_never_stop(recorder):
    reporter, clock, _, beats = recorder
    for i in range(1000):
        clock.now += 0.01
        reporter.progress(i)
        reporter.tick()
    assert 9 <= len(beats) <= 11  # ten seconds of constant progress: about one a second

    before = len(beats)
    clock.now += 5.0  # a long silent step: liveness is still written
    reporter.tick()
    assert len(beats) == before + 1


def test_a_job_that_reports_nothing_still_pushes_a_sign_of_life_at_each_heartbeat(recorder):
    """Clients count a running job's silence from the last payload they got (a frozen worker
    pushes nothing), so a live but quiet job must push at each of its heartbeats."""
    reporter, clock, pushes, _ = recorder
    reporter.progress(1, 10, "a long step")
    clock.now += 0.1
    reporter.tick()
    before = len(pushes)

    for _ in range(3):
        clock.now += 5.0  # max_silence: a heartbeat, then a push of the same progress
        reporter.tick()
        clock.now += 0.1
        reporter.tick()

    assert len(pushes) == before + 3
    assert all(p["silent_for"] == 0.0 and not p["stalled"] for p in pushes[before:])
    assert [p["progress"]["current"] for p in pushes[before:]] == [1, 1, 1]


def test_progress_keeps_total_and_message_when_omitted(recorder):
    reporter, clock, pushes, _ = recorder
    reporter.progress(1, 5, "first")
    clock.now += 0.2
    reporter.progress(2)
    assert pushes[-1]["progress"] == {"current": 2, "total": 5, "message": "first"}


def test_a_cancel_request_reaches_the_job_at_the_next_heartbeat(recorder):
    reporter, clock, pushes, _ = recorder
    reporter.progress(1, 10)
    reporter.fake_row["cancel"] = True
    assert reporter.cancelled is False

    clock.now += 1.0
    reporter.progress(2, 10)
    reporter.tick()
    assert reporter.cancelled is True

    clock.now += 0.2
    reporter.tick()
    assert pushes[-1]["cancel_requested"] is True  # shown as cancelling without waiting for progress


def test_log_lines_are_buffered_bounded_and_written_by_the_pump(make_user, settings):
    settings.RUNBOARD_LOG_LINES_KEPT = 5
    written = []
    reporter = ProgressReporter(
        job=make_job(owner=make_user()), publish=lambda p: None, heartbeat=lambda p: (1, False),
        write_log=written.append, pump=False,
    )  # fmt: skip
    for i in range(12):
        reporter.log(f"line {i}")
    assert written == []  # the job's thread never writes

    reporter.tick()
    assert written == [[f"line {i}" for i in range(7, 12)]]


def test_the_job_never_waits_for_a_slow_heartbeat_write(make_user):
    import threading

    clock = FakeClock()
    writing, release = threading.Event(), threading.Event()
    pushes = []

    def slow_heartbeat(progress):
        writing.set()
        release.wait(10)  # a database write stuck behind a lock
        return 5, False

    reporter = ProgressReporter(
        job=make_job(owner=make_user()), clock=clock, publish=pushes.append, heartbeat=slow_heartbeat,
        pump=False, push_interval=0.1, heartbeat_interval=1.0, max_silence=5.0,
    )  # fmt: skip
    reporter.progress(1, 10)
    clock.now += 1.0
    pump = threading.Thread(target=reporter.tick)
    pump.start()
    assert writing.wait(5)

    before = len(pushes)
    clock.now += 0.2
    reporter.progress(2, 10)  # must not block on the pump's write
    assert len(pushes) == before + 1 and pushes[-1]["progress"]["current"] == 2

    release.set()
    pump.join(5)
    clock.now += 0.2
    reporter.tick()
    assert pushes[-1]["version"] > pushes[-2]["version"]
    assert pushes[-1]["version"] // 1000 == 5  # the new row version after the write landed


def test_log_lines_are_written_in_order_whoever_flushes_them(make_user):
    import threading

    written, entered, gate = [], [], threading.Event()

    def slow_write(lines):
        entered.append(1)
        if len(entered) == 1:
            gate.wait(2)  # the first flush is slow; a second flusher must not overtake it
        written.append(list(lines))

    reporter = ProgressReporter(
        job=make_job(owner=make_user()), publish=lambda p: None, heartbeat=lambda p: (1, False),
        write_log=slow_write, pump=False,
    )  # fmt: skip
    reporter.log("first")
    pump = threading.Thread(target=reporter.tick)
    pump.start()
    while not entered:
        pass
    reporter.log("second")
    closer = threading.Thread(target=reporter.close)
    closer.start()
    gate.set()
    pump.join(5), closer.join(5)

    assert [line for batch in written for line in batch] == ["first", "second"]


def test_the_first_progress_is_not_pushed_on_the_heels_of_the_running_push(recorder):
    """Issue 15 §3: the start pushed the job as running a moment ago; the reporter's push interval
    begins there, so a job's first ``progress()`` waits for it (a zero-step job pushed the same
    state twice) and the pump pushes it once the interval is over."""
    reporter, clock, pushes, _ = recorder
    reporter.progress(0, 10, "Starting")
    assert pushes == []

    clock.now += 0.1
    reporter.tick()
    assert [p["progress"] for p in pushes] == [{"current": 0, "total": 10, "message": "Starting"}]
