"""Issue 16 in headless Chromium, at desktop and phone widths: a finished job's bar never looks
working or done when it failed, and rates read with their kind's unit ("12.9 MB/s")."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.models import JobState
from tests.frontend.test_dashboard_browser import log_in, open_launch_form
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}

# Every bar in the list: whether it shows the animated "working" state, its value, its label.
BARS = """() => [...document.querySelectorAll("li.job")].map((row) => ({
  name: row.querySelector(".job-title").textContent,
  state: row.dataset.state,
  working: row.querySelector("progress").matches(":indeterminate"),
  value: row.querySelector("progress").value,
  label: row.querySelector(".job-percent").textContent,
  error: row.querySelector(".job-error").textContent,
}))"""


def _launch_csvs(page, files):
    form = open_launch_form(page, "Profile a CSV file", "csv_profile")
    for launched, (name, content) in enumerate(files, 1):
        form.locator("input[type=file]").set_input_files(
            files=[{"name": name, "mimeType": "text/csv", "buffer": content}]
        )
        form.get_by_role("button", name="Launch").click()
        expect(page.locator("li.job")).to_have_count(launched)


@pytest.mark.parametrize("width", WIDTHS)
def test_failed_csv_profiles_freeze_their_bar_short_of_full_never_100_percent_or_working(
    page, make_user, celery_worker, width
):
    """Fails before: the file that fails at line 2 is read whole in one chunk, so its red bar was
    full and read "100%"; the empty file's total is 0, so its bar animated as if working."""
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    log_in(page, make_user())
    _launch_csvs(page, [("ragged.csv", b"a,b\n1,2,3\n4,5\n"), ("empty.csv", b"")])
    rows = page.locator("li.job")
    for row in (rows.nth(0), rows.nth(1)):
        expect(row).to_have_attribute("data-state", "failed", timeout=20_000)
    expect(page.locator("li.job", has_text="ragged.csv: Line 2")).to_have_count(1)
    expect(page.locator("li.job", has_text="empty.csv")).to_have_count(1)

    bars = {bar["error"].split(":")[0]: bar for bar in page.evaluate(BARS)}
    assert set(bars) == {"ragged.csv", "empty.csv"}, bars
    looks_working_or_done = {
        name: bar
        for name, bar in bars.items()
        if bar["working"] or bar["value"] >= 100 or bar["label"] == "100%"
    }
    assert looks_working_or_done == {}
    # The bar is inside the row on a phone too (nothing pushed off the screen).
    box = rows.first.locator("progress").bounding_box()
    assert box is not None and box["x"] + box["width"] <= WIDTHS[width][0]


def test_a_cancelled_job_without_a_total_shows_a_still_bar_not_a_working_one(page, make_user):
    """Fails before: a job that counts without a total (its bar animated while it ran) kept
    animating once cancelled."""
    user = make_user()
    make_job(owner=user, state=JobState.CANCELLED, progress_current=1234, progress_total=None)
    log_in(page, user)
    expect(page.locator("li.job")).to_have_count(1)

    [bar] = page.evaluate(BARS)
    assert bar["state"] == "cancelled" and not bar["working"] and bar["label"] == "", bar


def test_the_rate_formatter_reads_units_with_si_prefixes_in_the_browser(page, make_user):
    """Fails before: common.js had no formatRate (rates read "12865672/s")."""
    log_in(page, make_user(), live=False)
    shown = page.evaluate(
        """async () => {
          const { formatRate, duration } = await import("/static/frontend/common.js");
          return [formatRate(12865672, "bytes"), formatRate(614379711, "numbers"), formatRate(3.2, "rows"),
                  formatRate(999.7, "rows"), formatRate(512, "bytes"), formatRate(0.05, "steps"),
                  formatRate(12345, "rows"), duration(65)];
        }"""
    )
    assert shown == [
        "12.9 MB/s", "614 M numbers/s", "3.2 rows/s", "1.0 k rows/s", "512 B/s", "0.05 steps/s",
        "12.3 k rows/s", "1 min 5 s",
    ]  # fmt: skip


@pytest.mark.parametrize("width", WIDTHS)
def test_a_running_jobs_rate_reads_in_its_kinds_unit_and_fits_the_row(page, make_user, width):
    """Fails before: the rows read "614379711/s" and "12865672/s". The payload's ``unit`` comes
    from the kind (primes count numbers, a CSV profile bytes)."""
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    user = make_user()
    now = timezone.now()
    ten_seconds_ago = now - timedelta(seconds=10)
    make_job(
        owner=user, kind="primes", params={"n": 12_287_594_220, "chunks": 4}, state=JobState.RUNNING,
        progress_current=6_143_797_110, progress_total=12_287_594_220, started_at=ten_seconds_ago,
        heartbeat_at=now,
    )  # fmt: skip
    make_job(
        owner=user, kind="csv_profile", params={"upload_id": "00000000-0000-0000-0000-000000000001"},
        state=JobState.RUNNING, progress_current=128_656_720, progress_total=1_672_537_360,
        started_at=ten_seconds_ago, heartbeat_at=now,
    )  # fmt: skip
    log_in(page, user)

    primes = page.locator("li.job", has_text="Count primes").locator(".job-rate")
    csv = page.locator("li.job", has_text="Profile a CSV file").locator(".job-rate")
    expect(primes).to_have_text(re.compile(r"^614 M numbers/s · 10 s left$"))
    expect(csv).to_have_text(re.compile(r"^12\.9 MB/s · 2 min \d+ s left$"))
    for rate in (primes, csv):
        box = rate.bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDTHS[width][0], (width, box)
