"""Headless Chromium for tests, driven by Selenium through Debian's chromedriver.

``ensure_chromium()`` returns the Chromium binary and its chromedriver, installing Debian's
``chromium`` and ``chromium-driver`` packages with apt-get where missing (once, as root, under a
file lock; ``apt-get update`` only when apt knows no candidate), or skips the test with the reason;
with ``PLASTICLM_REQUIRE_BROWSER=1`` it fails instead of skipping, for CI that must run it. Both
paths are given to Selenium explicitly, so Selenium Manager never downloads a browser or driver.
``Chromium`` starts a headless browser; ``Chromium.open(url)`` loads a page and returns what a
test needs: image load states, console errors, exceptions, log errors and every requested URL
(the browser and performance logs of chromedriver).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")
PACKAGES = ("chromium", "chromium-driver")  # Debian's names
INSTALL_LOCK = Path(tempfile.gettempdir()) / "plasticlm-chromium-install.lock"


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def find_chromedriver() -> str | None:
    for name in DRIVERS:
        path = shutil.which(name) or (name if Path(name).is_file() and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


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


def _missing() -> list[str]:
    return [pkg for pkg, found in zip(PACKAGES, (find_chromium(), find_chromedriver())) if not found]


def ensure_chromium() -> tuple[str, str]:
    """(chromium, chromedriver), installed with apt-get where missing (root on Debian); else skip with why."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed: pip install -e '.[dev]'")
    missing = _missing()
    if not missing:
        return find_chromium(), find_chromedriver()
    what = " and ".join(missing)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable(f"{what} not installed and installing needs root: run `sudo apt-get install {' '.join(missing)}`")
    if not shutil.which("apt-get"):
        _unavailable(f"{what} not installed and there is no apt-get to install with")
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent session installs once; the others wait here
        missing = _missing()
        if missing:
            try:
                if not all(_apt_has_candidate(p) for p in missing):
                    done = _apt(["update"], timeout=600)
                    if done.returncode != 0:
                        _unavailable(f"`apt-get update` failed: {done.stderr.strip()[-500:]}")
                done = _apt(["install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *missing],
                            timeout=1500)
            except subprocess.TimeoutExpired as e:
                _unavailable(f"installing {what} timed out ({e})")
            if done.returncode != 0:
                _unavailable(f"`apt-get install {' '.join(missing)}` failed: {done.stderr.strip()[-500:]}")
    if _missing():
        _unavailable(f"apt-get installed {what} but {' and '.join(_missing())} is still not found")
    return find_chromium(), find_chromedriver()


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
    """A headless Chromium under chromedriver (use as a context manager)."""

    def __init__(self, binaries: tuple[str, str], workdir: Path, timeout: float = 120.0):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        binary, driver = binaries
        self.workdir = Path(workdir)
        opts = webdriver.ChromeOptions()
        opts.binary_location = binary
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
                    f"--user-data-dir={self.workdir / 'profile'}"):
            opts.add_argument(arg)
        # browser log: console messages, uncaught exceptions, failed loads; performance log: DevTools
        # Network events, i.e. every request the page made
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=driver, log_output=str(self.workdir / "chromedriver.log"))
        self.driver = webdriver.Chrome(options=opts, service=service)
        self.driver.set_page_load_timeout(timeout)
        self.driver.get("about:blank")  # leave whatever start page the browser opened

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "driver", None) is not None:
            self.driver.quit()
            self.driver = None

    def open(self, url: str, width: int = 1280, height: int = 900, screenshot: bool = False) -> PageLoad:
        """Load ``url``; collect image states, errors and requests; optionally a full-page PNG."""
        d = self.driver
        d.get_log("browser")  # drop what earlier pages left
        d.get_log("performance")
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        d.get(url)  # returns after the load event
        images = d.execute_script(
            "return Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
            "width: i.naturalWidth, height: i.naturalHeight}))")
        load = PageLoad(images)
        if screenshot:
            size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = d.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
            load.screenshot = base64.b64decode(shot["data"])
        for entry in d.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            source = entry.get("source")
            target = {"console-api": load.console_errors, "javascript": load.exceptions}.get(source, load.log_errors)
            target.append(entry["message"])
        for entry in d.get_log("performance"):  # requests made for this document (not for the start page)
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent" and msg["params"].get("documentURL") == url:
                load.requests.append(msg["params"]["request"]["url"])
        d.get("about:blank")
        return load
