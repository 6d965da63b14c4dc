#!/usr/bin/env python
"""Take the docs' screenshots from a running Runboard (`make run` in another terminal).

Usage: .venv/bin/python scripts/screenshot.py [URL] [--items PREFIX] [--password-file PATH]
Logs in as the demo user (password from var/demo-password), launches a few jobs, and writes
docs/img/dashboard.png, docs/img/job-csv-profile.png and docs/img/dashboard-dark.png.

With ``--items PREFIX`` it instead writes one screenshot per item of issue 16 that shows on a
page, as docs/img/issue16/PREFIX-NN-name.png (``before`` from a checkout of the code before the
issue, ``after`` from today's): the same steps against either, so the two sets compare. A step
the older code cannot do (a page it does not have) is shot as it answers.
"""

import argparse
import random
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000")
parser.add_argument(
    "--items", metavar="PREFIX", help="issue 16's before/after shots, named PREFIX-NN-name.png"
)
parser.add_argument("--password-file", type=Path, default=ROOT / "var" / "demo-password")
options = parser.parse_args()
url = options.url.rstrip("/")
out = ROOT / "docs" / "img"
password = options.password_file.read_text().strip()
out.mkdir(parents=True, exist_ok=True)

sample = Path(tempfile.mkdtemp()) / "orders.csv"
rng = random.Random(7)
with sample.open("w") as f:
    f.write("order_id,amount,ordered_on,paid,region\n")
    for i in range(20_000):
        f.write(f"{i},{rng.uniform(1, 500):.2f},2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)},")
        f.write(f"{rng.choice(['yes', 'no'])},{rng.choice(['north', 'south', 'east', 'west'])}\n")


def log_in(page):
    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#connection[data-state=live]")


def csv_file(name: str, content: bytes) -> Path:
    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(content)
    return path


def items(browser, prefix: str) -> list[Path]:
    """Issue 16's items 1-7 and 11-13 as a person sees them, one PNG each."""
    folder = out / "issue16"
    folder.mkdir(exist_ok=True)
    written: list[Path] = []

    def shot(page, name, locator=None, **kwargs):
        path = folder / f"{prefix}-{name}.png"
        try:
            target = page.locator(locator).first if locator else None
            if target is not None and target.count():
                target.screenshot(path=str(path), timeout=10_000)
            else:
                page.screenshot(path=str(path), **kwargs)
        except Exception as exc:  # an older page may lack the element: shoot the page instead
            print(f"{name}: {exc.__class__.__name__}; whole page instead")
            page.screenshot(path=str(path), **kwargs)
        written.append(path)

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    log_in(page)
    # 4, 2, 3: two CSV files (one fails at line 2), a long primes count (its rate mid-way).
    launch(page, "Profile a CSV file", "csv_profile", **{"CSV file": sample})
    launch(
        page,
        "Profile a CSV file",
        "csv_profile",
        **{"CSV file": csv_file("ragged.csv", b"a,b\n1,2,3\n4,5\n")},
    )
    # 6: a latin-1 file with semicolons and decimal commas, as a spreadsheet exports it.
    latin = "stadt;preis\n" + "".join(f"Zürich;{n},50\nMünchen;{n},25\n" for n in range(200))
    launch(
        page,
        "Profile a CSV file",
        "csv_profile",
        **{"CSV file": csv_file("städte.csv", latin.encode("latin-1"))},
    )
    # 7: a job that fails its first attempt and is retried automatically, and one retried by hand.
    launch(
        page,
        "Simulated work",
        "simulate",
        **{"Steps": "3", "Milliseconds per step": "100", "Fail at step": "2"},
    )
    page.wait_for_timeout(2500)
    retry = page.locator("li.job[data-state=failed] button.job-retry").first
    if retry.count():
        retry.click()
    launch(page, "Count primes", "primes", **{"Below N": "3000000000", "Chunks": "2"})
    page.wait_for_timeout(3500)
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "04-labels", "#jobs")
    shot(page, "02-failed-bar", "li.job[data-state=failed]")
    shot(page, "03-units", "li.job[data-state=running]")
    shot(page, "07-rows", "#jobs")
    page.goto(f"{url}/settings/")
    page.wait_for_timeout(3000)
    shot(page, "01-live-header", clip={"x": 0, "y": 0, "width": 1280, "height": 260})
    # 5: a succeeded CSV job's page at a desktop's and a phone's width.
    page.goto(f"{url}/")
    page.wait_for_timeout(1500)
    page.locator("li.job[data-state=succeeded] a.job-title", has_text="Profile a CSV file").last.click()
    page.wait_for_timeout(2000)
    shot(page, "05-layout-desktop", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(800)
    shot(page, "05-layout-phone", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{url}/")
    page.wait_for_timeout(1500)
    # Its row names the file: in its label, or (older code) in its error.
    latin_row = page.locator("li.job", has_text="städte")
    if not latin_row.count():
        latin_row = page.locator("li.job", has_text="Profile a CSV file").last
    latin_row.first.locator("a.job-title").click()
    page.wait_for_timeout(2000)
    shot(page, "06-encodings", full_page=True)
    # 11, 13: the Operations page (charts, failures grouped by error); 12: bulk actions.
    page.goto(f"{url}/operations/")
    page.wait_for_timeout(4000)
    shot(page, "11-charts", full_page=True)
    shot(page, "13-failures", "#history-failures")
    page.goto(f"{url}/operations/bulk/?state=failed")
    page.wait_for_timeout(1500)
    shot(page, "12-bulk", full_page=True)
    page.close()
    return written


def launch(page, title, kind, **fields):
    form = page.locator(f"form[data-kind={kind}]")
    if not form.is_visible():
        page.locator("summary", has_text=title).click()
    for label, value in fields.items():
        field = form.get_by_label(label)
        if label == "CSV file":
            field.set_input_files(str(value))
        else:
            field.fill(value)
    form.get_by_role("button", name="Launch").click()
    page.wait_for_timeout(300)


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    )
    if options.items:
        for path in items(browser, options.items):
            print(f"wrote {path}")
        browser.close()
        raise SystemExit(0)
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    log_in(page)
    launch(page, "Profile a CSV file", "csv_profile", **{"CSV file": sample})
    launch(page, "Count primes", "primes", **{"Below N": "200000000", "Chunks": "4"})
    for steps, step_ms, fail_at in (("3", "100", "2"), ("60", "250", ""), ("40", "300", "")):
        launch(
            page, "Simulated work", "simulate",
            **{"Steps": steps, "Milliseconds per step": step_ms, "Fail at step": fail_at},
        )  # fmt: skip
    page.wait_for_timeout(3500)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out / "dashboard.png"))
    page.locator("li.job a.job-title", has_text="Profile a CSV file").first.click()
    page.wait_for_selector("table.profile")
    page.screenshot(path=str(out / "job-csv-profile.png"), full_page=True)

    dark = browser.new_page(viewport={"width": 1200, "height": 760}, color_scheme="dark")
    log_in(dark)
    dark.locator("#bell").click()
    dark.wait_for_timeout(500)
    dark.screenshot(path=str(out / "dashboard-dark.png"))
    browser.close()
    for name in ("dashboard.png", "job-csv-profile.png", "dashboard-dark.png"):
        print(f"wrote {out / name}")
