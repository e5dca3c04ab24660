"""Step 6: the dashboard in headless Chromium, signed in with a key, showing this test's traffic.

Chromium opens /dashboard#key=..., whose sign-in page trades the key for a session cookie and
reloads into the dashboard, which fetches /dashboard/data and draws it. The DOM must hold the
requests, checks and feedback sent here (a prompt with HTML in it stays text), and a screenshot
must show the charts' colours over thousands of pixels. Skipped without Chromium, unless
ADHERE_REQUIRE_BROWSER=1, where that is a failure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import run_chromium as run_browser
from test_serve_support import (  # noqa: F401  (fixtures)
    API_KEY,
    auth,
    chat,
    client,
    long_tiny_dir_fixture,
    one_torch_thread_fixture,
    start_server,
)

# Sign in, reload, fetch the data and draw: all within 8 virtual seconds.
PAGE_FLAGS = ["--window-size=1280,1800", "--virtual-time-budget=8000"]
HOSTILE = '<img src=x onerror="document.title=1">'
ANSWERED_BLUE = (0x2E, 0x90, 0xFA)  # COLORS[0] in dashboard.html: answered bars, the p50 line
FAILED_RED = (0xF0, 0x44, 0x38)  # COLORS[1]: failed requests


def run_chromium(binary: str, *args: str) -> str:
    return run_browser(binary, *PAGE_FLAGS, *args)


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory, long_tiny_dir: Path) -> Any:
    """A server that has answered 5 requests, refused 1, and received 2 feedbacks."""
    server = start_server(tmp_path_factory.mktemp("dashboard"), long_tiny_dir)
    openai = client(server)
    ids = [openai.chat.completions.create(model="p", messages=chat(text), max_tokens=4).id
           for text in ("Review this code.", "Name a river.", "Name a city.", "Say hi.", HOSTILE)]
    httpx.post(f"{server.url}/v1/chat/completions", headers=auth(), json={"model": "p", "messages": chat("x"), "n": 2})
    for completion_id, body in ((ids[0], {"rating": "up", "comment": "crisp review"}),
                                (ids[1], {"rating": 2, "correction": "The Nile."})):
        httpx.post(f"{server.url}/v1/feedback", headers=auth(), json={"completion_id": completion_id, **body})
    yield server
    server.stop()


@pytest.mark.browser
def test_the_signed_in_dashboard_shows_the_traffic(chromium: str, busy_server: Any) -> None:
    html = run_chromium(chromium, "--dump-dom", f"{busy_server.url}/dashboard#key={API_KEY}")
    assert "adhere dashboard" in html and 'id="latest"' in html, "still on the sign-in page"
    totals = {name: value for value, name in re.findall(r'<div class="card total"><b>([^<]*)</b>([^<]*)</div>', html)}
    assert totals["requests"] == "6" and totals["errors"] == "1" and totals["max_words(n=5)"] == "100%"
    assert totals["min_words(n=1)"] == "0%" and totals["feedback"] in ("1 up, 1 down", "1 down, 1 up")
    latest = html[html.index('<tbody id="latest">'):html.index("</tbody>", html.index('<tbody id="latest">'))]
    assert latest.count("<tr>") == 6 and latest.count("✓ max_words(n=5)") == 5 and latest.count("✗ min_words(n=1)") == 5
    assert "Name a river." in latest and "&lt;img src=x onerror=" in latest  # HTML from a prompt stays text
    assert "<img" not in html and "<title>adhere · dashboard</title>" in html  # the onerror never ran
    feedback = html[html.index('<tbody id="feedback">'):]
    assert "crisp review" in feedback and "The Nile." in feedback and "down (2)" in feedback
    volume = html[html.index('id="volume"'):html.index("</svg>", html.index('id="volume"'))]
    assert volume.count("<rect") >= 2  # answered and failed bars
    assert html.count("<polyline") + html.count("<circle") >= 3  # latency and compliance lines or points


@pytest.mark.browser
def test_the_dashboard_screenshot_shows_charts_with_the_traffic(chromium: str, busy_server: Any, tmp_path: Path) -> None:
    from PIL import Image  # a dependency of matplotlib, which adhere requires

    shot = tmp_path / "dashboard.png"
    run_chromium(chromium, f"--screenshot={shot}", f"{busy_server.url}/dashboard#key={API_KEY}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1800)
    counts = {colour: n for n, colour in image.getcolors(maxcolors=1 << 24)}
    assert len(counts) > 200  # text, tables, charts: far from a blank page
    # 5 answered requests make a blue bar of most of the chart's height; the refused one a red bar.
    assert counts.get(ANSWERED_BLUE, 0) > 3000 and counts.get(FAILED_RED, 0) > 300


def test_without_a_key_the_dashboard_is_only_a_sign_in_page(busy_server: Any) -> None:
    page = httpx.get(f"{busy_server.url}/dashboard")
    assert page.status_code == 401 and "Latest responses" not in page.text and "Review this code." not in page.text
