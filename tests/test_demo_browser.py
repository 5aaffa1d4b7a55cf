"""The demos in a real browser: Debian's headless Chromium, driven by the npm
package playwright-core (installed by scripts/install/browser.sh into
.tools/browser/; a missing browser or driver fails these tests, never skips
them). One click of the button brings 50 of 50 items; after "Empty the cart"
the page says nothing stale; two tabs clicked at once each count their own 50,
and both show the cart's 100 once both are done, never a smaller count.

The screenshot taken at the end is the one the docs show:
``UPDATE_SCREENSHOTS=1 python -m pytest tests/test_demo_browser.py`` writes it
to docs/images/ (commit it); otherwise it stays in the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PLAYWRIGHT = ROOT / ".tools" / "browser" / "node_modules" / "playwright-core"
CHROMIUM = Path("/usr/bin/chromium")
DEMOS = {"asgi": ROOT / "examples" / "demo.py", "flask": ROOT / "examples" / "flask_demo.py",
         "django": ROOT / "examples" / "django_demo.py"}

# As the machine notes: headless, no sandbox (root), and none of the
# background connections that a closed network refuses.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

SCRIPT = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [url, screenshot] = process.argv.slice(2);
const note = (page) => page.textContent("#note");
const settled = (page) => page.waitForFunction(
  () => / of 50 items arrived/.test(document.getElementById("note").textContent),
  null, {timeout: 15000});
const loaded = (page) => page.waitForFunction(
  () => document.getElementById("count").textContent !== "…", null, {timeout: 5000});
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM, headless: true, args: JSON.parse(process.env.FLAGS),
  });
  try {
    const context = await browser.newContext({viewport: {width: 820, height: 720}});
    const one = await context.newPage();
    await one.goto(url);
    await loaded(one);
    const result = {};
    await one.click("#add");
    await settled(one);
    result.single = {note: await note(one), count: await one.textContent("#count")};
    await one.click("#empty");
    await one.waitForFunction(() => document.getElementById("count").textContent === "0");
    result.emptied = {note: await note(one), count: await one.textContent("#count")};
    const two = await context.newPage();
    await two.goto(url);
    await loaded(two);
    const watch = (page) => page.evaluate(() => {  // every count the tab shows from now on
      window.seenCounts = [];
      const count = document.getElementById("count");
      new MutationObserver(() => window.seenCounts.push(count.textContent))
        .observe(count, {childList: true, characterData: true, subtree: true});
    });
    await Promise.all([watch(one), watch(two)]);
    await Promise.all([one.click("#add"), two.click("#add")]);
    await Promise.all([settled(one), settled(two)]);
    result.tabs = {one: await note(one), two: await note(two)};
    // Each tab shows the whole cart once both clicks are done, by itself: the
    // one done first never shows a count short of the other tab's items.
    const counts = [];
    for (const page of [one, two]) {
      await page.waitForFunction(
        () => document.getElementById("count").textContent !== "…", null, {timeout: 5000});
      counts.push(await page.textContent("#count"));
    }
    result.tabs.counts = counts;
    result.tabs.seen = [...new Set([
      ...await one.evaluate(() => window.seenCounts),
      ...await two.evaluate(() => window.seenCounts)])].sort();
    await one.bringToFront();
    await one.screenshot({path: screenshot});
    process.stdout.write(JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.fixture(params=sorted(DEMOS))
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The demo named by the param, on a free port with its own database."""
    port = free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "PORT": str(port), "DEMO_DB": str(tmp_path / "demo.db"),
           "DEMO_SECRET": secrets.token_urlsafe(32)}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(DEMOS[request.param])], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_port(port, process, log)
        yield request.param, f"http://127.0.0.1:{port}/"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_fifty_of_fifty_in_a_browser(demo: tuple[str, str], tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run bash scripts/install/browser.sh"
    assert PLAYWRIGHT.exists(), "no playwright-core: run bash scripts/install/browser.sh"
    name, url = demo
    script = tmp_path / "demo.cjs"
    script.write_text(SCRIPT)
    screenshot = tmp_path / f"demo-{name}.png"
    env = {**os.environ, "PLAYWRIGHT_CORE": str(PLAYWRIGHT), "CHROMIUM": str(CHROMIUM),
           "FLAGS": json.dumps(FLAGS), "HOME": str(tmp_path)}
    run = subprocess.run(["node", str(script), url, str(screenshot)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)

    assert result["single"] == {"note": "this click: 50 of 50 items arrived", "count": "50"}
    assert result["emptied"] == {"note": "", "count": "0"}  # nothing stale is left
    # both tabs end on the whole cart, and neither showed a count short of it
    # (the tab done first waits for the other: "…", then 100)
    assert result["tabs"] == {"one": "this click: 50 of 50 items arrived",
                              "two": "this click: 50 of 50 items arrived",
                              "counts": ["100", "100"], "seen": ["100", "…"]}
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(screenshot, ROOT / "docs" / "images" / screenshot.name)
