"""Look at every page of the built site in headless Chromium, as a newcomer's browser would.

Serves ``site/`` on a loopback port, opens each page at a desktop width (1280 px) and a phone
width (390 px), saves a full-page screenshot of each into ``site-shots/``, and fails if a page
scrolls sideways or logs a console error (a failed request, a script error). ``make
docs-browser`` installs Chromium and runs this.

Run: python docs/browser_check.py [--site site] [--out site-shots]
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import itertools
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket  # websocket-client: Chromium's DevTools protocol

WIDTHS = {"desktop": 1280, "phone": 390}


class DevTools:
    """One page's DevTools connection: commands in order, events kept for inspection."""

    def __init__(self, url: str) -> None:
        self.socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, method: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        if any(event.get("method") == method for event in self.events):
            return
        while time.monotonic() < deadline:
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = json.loads(self.socket.recv())
            except websocket.WebSocketTimeoutException:
                break
            self.events.append(message)
            if message.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {seconds} s")

    def close(self) -> None:
        self.socket.close()


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Return the console errors and uncaught exceptions among a page's events."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text')} ({entry.get('url', '')})")
    return errors


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def launch(browser: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "about:blank",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"DevTools listening on (ws://[^/]+)/", line)
        if match:
            # Drain the rest of stderr so Chromium never blocks writing to it.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, match.group(1).replace("ws://", "http://")
    process.kill()
    raise RuntimeError("Chromium did not start its DevTools server")


def check_page(endpoint: str, url: str, width: int, shot: Path) -> list[str]:
    request = urllib.request.Request(f"{endpoint}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        target = json.load(response)
    tools = DevTools(target["webSocketDebuggerUrl"])
    try:
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable")
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        tools.send("Page.navigate", url=url)
        tools.wait_for("Page.loadEventFired", 30)
        time.sleep(0.5)  # the theme's scripts (search, code copy buttons) settle
        problems = [f"console: {error}" for error in console_errors(tools.events)]
        metrics = tools.send(
            "Runtime.evaluate",
            expression="[document.documentElement.scrollWidth, window.innerWidth]",
            returnByValue=True,
        )["result"]["value"]
        if metrics[0] > metrics[1]:
            problems.append(f"scrolls sideways: {metrics[0]} px of content in {metrics[1]} px")
        image = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(image["data"]))
        return problems
    finally:
        tools.close()
        urllib.request.urlopen(f"{endpoint}/json/close/{target['id']}", timeout=30).close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("site"))
    parser.add_argument("--out", type=Path, default=Path("site-shots"))
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium on PATH: install it (apt-get install chromium)", file=sys.stderr)
        return 2
    pages = sorted(p for p in args.site.rglob("*.html") if p.name != "404.html")
    shutil.rmtree(args.out, ignore_errors=True)
    server, base = serve(args.site)
    process, endpoint = launch(browser)
    failures = 0
    try:
        for page in pages:
            path = page.relative_to(args.site).as_posix()
            url = base + path.removesuffix("index.html")
            for kind, width in WIDTHS.items():
                name = path.removesuffix("/index.html").removesuffix("index.html") or "home"
                shot = args.out / kind / f"{name.replace('/', '_')}.png"
                problems = check_page(endpoint, url, width, shot)
                status = "ok" if not problems else "FAILED"
                print(f"{status:6} {kind:7} {width:4} px  /{path}")
                for problem in problems:
                    print(f"         {problem}")
                failures += bool(problems)
    finally:
        process.kill()
        server.shutdown()
    print(f"{len(pages) * len(WIDTHS)} views, {failures} failed; screenshots in {args.out}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
