"""The HTML report in a real browser: Debian's headless chromium lays it out and the charts have marks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from detector.evaluation.evaluate import evaluate_file
from detector.evaluation.report import write_html
from detector.evaluation.sim import simulate, write_events

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHARTS = ("traffic", "decisions", "money", "scores", "reasons", "prefixes", "ips", "countries")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (make system-deps)")
    profile = tmp_path / "profile"
    command = [
        CHROMIUM if Path(CHROMIUM).exists() else "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    events = folder / "events.jsonl"
    write_events(simulate("mix", duration=4 * 3600, seed=31, start=1_793_620_800.0), events)  # 12:00 UTC
    shadow = evaluate_file(events, shadow=True)
    return write_html(evaluate_file(events), folder / "report.html", shadow=shadow)


def test_the_charts_render_in_chromium(report_page: Path, tmp_path: Path) -> None:
    result = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", report_page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    body = re.search(r'<body[^>]*data-rendered="(\d+)"[^>]*>', dom)
    assert body is not None, "the inline script did not run"
    assert int(body.group(1)) > 100
    assert re.search(r'<body[^>]*data-charts="8"', dom)
    for chart in CHARTS:
        match = re.search(rf'<svg[^>]*id="{chart}"[^>]*>', dom)
        assert match is not None, chart
        rendered = re.search(r'data-rendered="(\d+)"', match.group(0))
        assert rendered is not None and int(rendered.group(1)) > 0, f"{chart}: no mark with a non-zero box"


def test_a_screenshot_of_the_report(report_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(tmp_path, "--window-size=1300,2600", f"--screenshot={shot}", report_page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # charts, not a blank page


def test_the_report_is_one_offline_file(report_page: Path) -> None:
    page = report_page.read_text()
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', page), "the report must not load anything"
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") == len(CHARTS)
