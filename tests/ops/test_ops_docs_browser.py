"""/docs in a real browser: headless Chromium (Debian's) loads each service's Swagger UI page.

Driven over the DevTools protocol (websocket-client, already a runtime dependency): the
page loads from the service alone (assets included, no CDN), every documented operation
renders, "try it out" on GET /health gets the service's own 200, no console error or
uncaught exception is reported, and a screenshot is saved with the test's files.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websocket
from sardag_testing import free_port, wait_until
from sardag_testing.processes import Launcher, http

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,2000",
]


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, binary: str, tmp: Path) -> None:
        self.port = free_port()
        argv = [binary, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--remote-debugging-port={self.port}"]
        self.log = (tmp / "chromium.log").open("wb")
        self.process = subprocess.Popen([*argv, "about:blank"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._page_ready, 60, "chromium's DevTools endpoint")
        self.ws = websocket.create_connection(self.page_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def _page_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as answer:
                targets = json.load(answer)
        except OSError:
            return False
        pages = [t for t in targets if t.get("type") == "page"]
        if pages:
            self.page_url = pages[0]["webSocketDebuggerUrl"]
        return bool(pages)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events seen meanwhile are kept."""
        number = next(self.ids)
        self.ws.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == number:
                assert "error" not in message, message
                return dict(message.get("result", {}))
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def errors(self) -> list[dict[str, Any]]:
        """Console errors, uncaught exceptions and browser log errors reported so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            console = method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert")
            logged = method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"
            if method == "Runtime.exceptionThrown" or console or logged:
                found.append(event)
        return found

    def close(self) -> None:
        """Stop the browser."""
        self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def _operations(document: dict[str, Any]) -> int:
    return sum(len(item) for item in document["paths"].values())


TRY_HEALTH = """(() => {
  const path = [...document.querySelectorAll('.opblock-summary-path')].find(e => e.dataset.path === '/health');
  const block = path.closest('.opblock');
  if (!block.classList.contains('is-open')) block.querySelector('.opblock-summary-control').click();
  return true;
})()"""
EXECUTE = """(() => {
  const block = [...document.querySelectorAll('.opblock')].find(
    b => b.querySelector('.opblock-summary-path')?.dataset.path === '/health');
  const execute = block && block.querySelector('.execute');
  if (execute) { execute.click(); return true; }
  const tryOut = block && block.querySelector('.try-out__btn');  // when not enabled already
  if (tryOut) tryOut.click();
  return false;
})()"""
STATUS = """(() => {
  const block = [...document.querySelectorAll('.opblock')].find(
    b => b.querySelector('.opblock-summary-path')?.dataset.path === '/health');
  const cell = block && block.querySelector('.live-responses-table tbody .response-col_status');
  return cell ? cell.textContent.trim() : null;
})()"""


@pytest.mark.parametrize("service", ["database-service", "websocket-streaming"])
def test_docs_renders_every_operation_and_tries_one_out(
    ops: SimpleNamespace, tmp_path: Path, service: str
) -> None:
    chromium = ops.find_tool("chromium")
    with Launcher(tmp_path) as launch:
        # websocket-streaming answers /health without a feed (503 degraded is still JSON):
        # the page must render either way; the test does not need Binance
        extra = {"BINANCE_WS_URL": "ws://127.0.0.1:9", "BINANCE_REST_URL": "http://127.0.0.1:9"}
        server = launch.gunicorn(
            service, workers=1, **(extra if service == "websocket-streaming" else {}), wait=False
        )
        launch.wait_healthy(server, statuses=(200, 503))
        document = http("GET", f"{server.url}/openapi.json")[1]
        browser = Browser(chromium, tmp_path)
        try:
            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                browser.call(domain)
            browser.call("Page.navigate", url=f"{server.url}/docs")
            count = "document.querySelectorAll('.opblock').length"
            wait_until(lambda: browser.evaluate(count) == _operations(document), 60, "every operation rendered")
            paths = browser.evaluate(
                "[...document.querySelectorAll('.opblock-summary-path')].map(e => e.dataset.path)"
            )
            assert set(paths) == set(document["paths"])
            assert browser.evaluate(TRY_HEALTH)
            wait_until(lambda: browser.evaluate(EXECUTE), 20, "try it out's execute button", interval=0.5)
            expected = str(http("GET", f"{server.url}/health")[0])
            wait_until(lambda: browser.evaluate(STATUS) == expected, 30, "the service's answer in the page")
            time.sleep(0.5)  # let late console messages arrive before judging
            browser.evaluate("1")
            shot = browser.call("Page.captureScreenshot", format="png")
            (tmp_path / f"{service}-docs.png").write_bytes(base64.b64decode(shot["data"]))
            assert browser.errors() == []
        finally:
            browser.close()
    print(f"screenshot: {tmp_path / f'{service}-docs.png'}")
