"""The report in a real headless Chromium: every image loads, nothing errs, nothing leaves the disk.

Chromium and its chromedriver are installed by the test setup where missing (tests/browser.py); the
page is driven by Selenium, whose browser and performance logs show console errors, uncaught
exceptions, failed loads and every request the page made.
Set PLASTICLM_SCREENSHOT=path.png to keep a full-page screenshot of the study report.
"""

import os
import shutil
from pathlib import Path

import pytest

from plasticlm.report.build import make_report
from tests.browser import Chromium, ensure_chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1800)]  # a first run may install chromium


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    with Chromium(ensure_chromium(), tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


def assert_clean(load, report) -> None:
    assert sorted(i["src"] for i in load.images) == sorted(p.name for p in report.figures)
    for img in load.images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert load.errors == []
    assert load.requests and all(u.startswith("file://") for u in load.requests), load.requests


def test_harness_sees_console_errors_exceptions_and_broken_images(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png"><img src="http://127.0.0.1:9/net.png">'
                    '<script>console.error("boom"); throw new Error("kaput");</script></body></html>')
    load = chromium.open(page.as_uri())
    assert load.images == [{"src": "missing.png", "complete": True, "width": 0, "height": 0},
                           {"src": "http://127.0.0.1:9/net.png", "complete": True, "width": 0, "height": 0}]
    assert load.requests == [page.as_uri(), (tmp_path / "missing.png").as_uri(), "http://127.0.0.1:9/net.png"]
    assert any("boom" in e for e in load.console_errors)
    assert any("kaput" in e for e in load.exceptions)
    assert any("missing.png" in e for e in load.log_errors)


def test_study_report_loads_every_figure_without_errors(chromium, study_dir, tmp_path):
    report = make_report(study_dir, n_boot=50)
    load = chromium.open(report.index.as_uri(), screenshot=True)
    assert len(load.images) == 5
    assert_clean(load, report)
    assert load.screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(load.screenshot[16:20], "big") == 1280
    Path(os.environ.get("PLASTICLM_SCREENSHOT") or tmp_path / "report.png").write_bytes(load.screenshot)


def test_single_run_report_loads_in_the_browser(chromium, study_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study_dir / "runs" / "25K-s0-stationary", run, ignore=shutil.ignore_patterns("checkpoints"))
    report = make_report(run, n_boot=20)
    assert_clean(chromium.open(report.index.as_uri()), report)


def test_without_chromium_and_without_root_the_browser_tests_skip_with_the_reason(monkeypatch):
    import tests.browser as b

    monkeypatch.setattr(b, "find_chromium", lambda: None)
    monkeypatch.setattr(b, "find_chromedriver", lambda: None)
    monkeypatch.setattr(b.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("PLASTICLM_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium and chromium-driver not installed and installing "
                       "needs root: run `sudo apt-get install chromium chromium-driver`"):
        b.ensure_chromium()
    monkeypatch.setenv("PLASTICLM_REQUIRE_BROWSER", "1")  # CI that must run them fails instead
    with pytest.raises(pytest.fail.Exception, match="required"):
        b.ensure_chromium()


def test_a_machine_with_chromium_but_no_driver_gets_the_driver_installed(monkeypatch):
    import tests.browser as b

    calls = []
    monkeypatch.setattr(b, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(b, "find_chromedriver", lambda: "/usr/bin/chromedriver" if calls else None)
    monkeypatch.setattr(b.os, "geteuid", lambda: 0)
    monkeypatch.setattr(b.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(b, "_apt_has_candidate", lambda pkg: True)

    def apt(args, timeout):
        calls.append(args)
        return b.subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(b, "_apt", apt)
    assert b.ensure_chromium() == ("/usr/bin/chromium", "/usr/bin/chromedriver")
    assert calls == [["install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "chromium-driver"]]
