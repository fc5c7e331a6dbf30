"""Drives Paygrid's web console in a real headless Chromium (Debian's `chromium`) with a
browser driver nobody at Paygrid wrote (Playwright for Python, which drives the
system's Chromium: no browser download). Prints one JSON line; exits non-zero on a failed
check.

    python console_check.py https://HTTP_ADDR LIVE_ID PAUSE_ID FAILED_ID [SCREENSHOT_DIR]

LIVE_ID: a running payment, followed until its graph shows it succeeded. PAUSE_ID: a
running payment, paused and resumed. FAILED_ID: a failed payment whose gateway is back,
retried from its failed task. PAYGRID_TOKEN is the operator's bearer token; the page is
served with the test CA's certificate, which this browser is told to accept.
"""

import json
import os
import shutil
import sys
import time
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright


def check(condition, message):
    if not condition:
        raise SystemExit(f"check failed: {message}")


def chromium():
    for name in [os.environ.get("PAYGRID_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)
    raise SystemExit("check failed: no chromium on the PATH (apt-get install chromium)")


def main(base, live, paused, failed, shots):
    seen = {"requests_elsewhere": []}
    origin = urlparse(base).netloc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(ignore_https_errors=True, viewport={"width": 1366, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: seen["requests_elsewhere"].append(r.url)
                if urlparse(r.url).scheme in ("http", "https") and urlparse(r.url).netloc != origin else None)

        # Sign in with the operator's token.
        page.goto(base + "/")
        page.wait_for_selector("#token")
        page.fill("#token", os.environ["PAYGRID_TOKEN"])
        page.click("[data-testid=signin]")
        page.wait_for_selector("[data-testid=workflow-list] tbody tr a")
        if shots:
            page.screenshot(path=os.path.join(shots, "console-workflows.png"), full_page=True)

        def open_workflow(workflow_id):
            page.goto(f"{base}/#/workflows/{workflow_id}")
            page.wait_for_selector("[data-testid=workflow-status]")
            page.wait_for_selector("[data-testid=graph] svg g.node")

        def status():
            return page.inner_text("[data-testid=workflow-status]")

        def wait_for(what, condition, seconds=60):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if condition():
                    return
                page.wait_for_timeout(100)
            raise SystemExit(f"check failed: never {what} (status {status()})")

        def confirm(button, fields=None):
            page.click(f"[data-testid={button}]")
            page.wait_for_selector("#confirm[open]")
            for name, value in (fields or {}).items():
                page.fill(f"#confirm-{name}", value)
            # The keyboard confirms: Enter submits the dialog's form.
            page.keyboard.press("Enter")
            page.wait_for_selector("#confirm:not([open])", state="attached")

        # 1. Pause one payment while its gateway call is in flight: what runs finishes,
        #    the next task waits, shown as paused; resume it and it succeeds.
        open_workflow(paused)
        check(status() == "running", f"the payment to pause is running ({status()})")
        confirm("op-pause", {"reason": "checking with the bank"})
        page.wait_for_selector("[data-testid=workflow-paused]")
        wait_for("a task waiting for the pause",
                 lambda: "workflow paused: checking with the bank" in page.inner_text("main"))
        check(page.is_disabled("[data-testid=op-pause]") and page.is_enabled("[data-testid=op-resume]"),
              "while paused, pause is off and resume on")
        seen["paused_status"] = status()

        # 2. Another payment, live: its graph moves to succeeded without a reload.
        open_workflow(live)
        statuses = {status()}
        wait_for("the live payment succeeded", lambda: statuses.add(status()) or status() == "succeeded")
        nodes = page.eval_on_selector_all("[data-testid=graph] g.node", "ns => ns.map(n => n.dataset.status)")
        check(nodes and all(s in ("succeeded", "skipped") for s in nodes), f"every task drawn succeeded: {nodes}")
        seen["live_statuses"] = sorted(statuses)
        seen["live_nodes"] = len(nodes)
        if shots:
            page.screenshot(path=os.path.join(shots, "console-workflow.png"), full_page=True)

        # Back to the paused one: resume.
        open_workflow(paused)
        check(page.query_selector("[data-testid=workflow-paused]") is not None, "still paused")
        confirm("op-resume")
        wait_for("the resumed payment succeeded", lambda: status() == "succeeded")
        seen["resumed"] = status()

        # 3. The failed payment: retry its failed task; it succeeds.
        open_workflow(failed)
        check(status() == "failed", f"the payment to retry failed ({status()})")
        failed_tasks = page.eval_on_selector_all("[data-testid=graph] g.node[data-status=failed]",
                                                 "ns => ns.map(n => n.dataset.task)")
        check(failed_tasks == ["authorize"], f"authorize is drawn failed: {failed_tasks}")
        confirm("op-retry")
        wait_for("the retried payment succeeded", lambda: status() == "succeeded")
        seen["retried"] = status()

        # A refusal reads as the control unit's reason.
        page.goto(f"{base}/#/workflows/{failed}")
        page.wait_for_selector("[data-testid=workflow-status]")
        check(page.is_disabled("[data-testid=op-retry]"), "retry is off for a succeeded payment")

        # 4. Agents and gateways.
        page.goto(f"{base}/#/agents")
        page.wait_for_selector("table[aria-label=Agents] tbody tr")
        page.wait_for_selector("table[aria-label='Circuit breakers'] tbody tr")
        check("alpha" in page.inner_text("table[aria-label='Circuit breakers']"), "gateway alpha's breaker is shown")
        if shots:
            page.screenshot(path=os.path.join(shots, "console-agents.png"), full_page=True)

        # Every form control has a label a screen reader reads.
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.id || e.name || e.outerHTML.slice(0, 60))""")
        check(not unlabelled, f"unlabelled controls: {unlabelled}")
        check(not errors, f"no script errors: {errors}")
        check(not seen["requests_elsewhere"], f"no request leaves the control unit: {seen['requests_elsewhere']}")
        browser.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:5], sys.argv[5] if len(sys.argv) > 5 else None)
