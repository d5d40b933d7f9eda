"""Headless Chromium for tests: find it (or install Debian's package where missing) and drive it over
the Chrome DevTools Protocol with a small standard-library WebSocket client (no pip dependency).

``ensure_chromium()`` returns the binary, installing ``chromium`` with apt-get once (as root, under
a file lock, ``apt-get update`` only when apt knows no candidate), or skips the test with the
reason; with ``PLASTICLM_REQUIRE_BROWSER=1`` it fails instead of skipping, for CI that must run it.
``Chromium`` starts a headless browser; ``Chromium.open(url)`` loads a page and returns what a
test needs: image load states, console errors, exceptions, log errors and every requested URL.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_LOCK = Path(tempfile.gettempdir()) / "plasticlm-chromium-install.lock"


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _unavailable(reason: str) -> None:
    if os.environ.get("PLASTICLM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"headless Chromium is required (PLASTICLM_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


def _apt(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _apt_has_candidate(package: str) -> bool:
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, timeout=60).stdout
    return "Candidate:" in out and "Candidate: (none)" not in out


def ensure_chromium() -> str:
    """A Chromium binary, installed with apt-get where missing (root on Debian); else skip with why."""
    path = find_chromium()
    if path:
        return path
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable("chromium is not installed and installing it needs root: run `sudo apt-get install chromium`")
    if not shutil.which("apt-get"):
        _unavailable("chromium is not installed and there is no apt-get to install it with")
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent session installs it once; the others wait here
        path = find_chromium()
        if path:
            return path
        try:
            if not _apt_has_candidate("chromium"):
                done = _apt(["update"], timeout=600)
                if done.returncode != 0:
                    _unavailable(f"`apt-get update` failed: {done.stderr.strip()[-500:]}")
            done = _apt(["install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "chromium"],
                        timeout=1500)
        except subprocess.TimeoutExpired as e:
            _unavailable(f"installing chromium timed out ({e})")
        if done.returncode != 0:
            _unavailable(f"`apt-get install chromium` failed: {done.stderr.strip()[-500:]}")
    path = find_chromium()
    if not path:
        _unavailable("apt-get installed chromium but no chromium binary is on PATH")
    return path


# --------------------------------------------------------------------------------------------
# A minimal WebSocket client (RFC 6455: client frames masked, text messages, ping/pong, close)
# --------------------------------------------------------------------------------------------


class WebSocket:
    def __init__(self, url: str, timeout: float = 30.0):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._exact(8), "big")
            mask = self._exact(4) if b1 & 0x80 else None
            data = self._exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self._frame(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._frame(0x8, b"")
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Chrome DevTools Protocol
# --------------------------------------------------------------------------------------------


@dataclass
class PageLoad:
    """What loading one page produced."""

    images: list[dict[str, Any]]
    """{"src", "complete", "width", "height"} of every <img>, width/height = natural size."""
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes | None = None

    @property
    def errors(self) -> list[str]:
        return self.console_errors + self.exceptions + self.log_errors


class Chromium:
    """A headless Chromium process and a DevTools connection to it (use as a context manager)."""

    def __init__(self, binary: str, workdir: Path, timeout: float = 30.0):
        self.workdir = Path(workdir)
        self.timeout = timeout
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (self.workdir / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start; its output: {self._log_tail()}")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = WebSocket(f"ws://127.0.0.1:{port}{path}", timeout)
        self.next_id = 0
        self.pending: list[dict[str, Any]] = []

    def _log_tail(self) -> str:
        self.log.flush()
        return (self.workdir / "chromium.log").read_text(errors="replace")[-2000:]

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
            self.ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.pending.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self.pending):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self.pending.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {self.timeout} s")
            self.pending.append(json.loads(self.ws.recv()))

    def open(self, url: str, width: int = 1280, height: int = 900, screenshot: bool = False) -> PageLoad:
        """Load ``url`` in a new tab; collect image states, errors and requests; optionally a full-page PNG."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session=session)
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
            self.pending.clear()
            self.call("Page.navigate", {"url": url}, session)
            self.wait_event("Page.loadEventFired", session)
            js = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
                  "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))")
            value = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True}, session)["result"]["value"]
            load = PageLoad(json.loads(value))
            if screenshot:
                size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shot = self.call("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}, session)
                load.screenshot = base64.b64decode(shot["data"])
            self.call("Runtime.evaluate", {"expression": "1"}, session)  # events sent before this have arrived
            for ev in self.pending:
                if ev.get("sessionId") != session:
                    continue
                p = ev.get("params", {})
                method = ev.get("method")
                if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    load.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                        for a in p.get("args", [])))
                elif method == "Runtime.exceptionThrown":
                    d = p.get("exceptionDetails", {})
                    load.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
                elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                    e = p["entry"]
                    load.log_errors.append(f"{e.get('text')} ({e.get('url', '')})")
                elif method == "Network.requestWillBeSent":
                    load.requests.append(p["request"]["url"])
            self.pending.clear()
            return load
        finally:
            self.call("Target.closeTarget", {"targetId": target})
