#!/usr/bin/env python
"""Take the docs' screenshots from a running Runboard (`make run` in another terminal).

Usage: .venv/bin/python scripts/screenshot.py [URL]
Logs in as the demo user (password from var/demo-password), launches a few jobs, and writes
docs/img/dashboard.png, docs/img/job-csv-profile.png and docs/img/dashboard-dark.png.
"""

import random
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
out = ROOT / "docs" / "img"
password = (ROOT / "var" / "demo-password").read_text().strip()
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
