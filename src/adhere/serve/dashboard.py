"""The dashboard: request volume, latency and compliance over time, the latest answers, feedback.

    open http://127.0.0.1:8000/dashboard           # sign in once with an API key
    open http://127.0.0.1:8000/dashboard#key=KEY   # or sign in from a script (the fragment never reaches a server log)

`GET /dashboard` answers a sign-in page (401) until the browser holds a session cookie, which
`POST /dashboard/login` gives for a valid key (see auth.py). The page is one self-contained HTML
file (dashboard.html: no CDN, charts drawn as SVG by a few lines of JavaScript) that reads
`GET /dashboard/data` every `serve.dashboard_refresh_s` seconds. Everything the model or a user
wrote reaches the page as text nodes, never as HTML.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from adhere.serve.auth import SESSION_COOKIE
from adhere.serve.monitor import connect
from adhere.serve.protocol import ApiError, LoginRequest
from adhere.serve.state import ServerState, require_viewer, server_state, viewer

router = APIRouter()

PAGES = Path(__file__).parent
BUCKETS = 30  # points per chart: enough to see a trend, few enough to read each one
NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
LATEST = 20  # answers and feedback rows listed
PREVIEW_CHARS = 400  # of each response, prompt, correction shown


@router.get("/dashboard", response_class=HTMLResponse, responses={401: {"description": "Sign-in page"}})
async def page(request: Request) -> HTMLResponse:
    """The dashboard for a signed-in browser (or a valid key); the sign-in page otherwise."""
    state = server_state(request)
    if not viewer(request):
        return HTMLResponse((PAGES / "login.html").read_text(encoding="utf-8"), status_code=401)
    settings = json.dumps({"refresh_s": state.config.serve.dashboard_refresh_s, "model": state.model_name})
    html = (PAGES / "dashboard.html").read_text(encoding="utf-8")
    # `</` cannot occur in the JSON after this, so it cannot end the <script> element that holds it.
    return HTMLResponse(html.replace("__SETTINGS__", settings.replace("</", "<\\/")))


@router.post("/dashboard/login", responses={401: {"description": "Invalid API key"}})
async def login(body: LoginRequest, request: Request) -> JSONResponse:
    """Exchange an API key for a session cookie (HttpOnly, SameSite=Strict) that the dashboard pages accept."""
    keys = server_state(request).keys
    digest = keys.check_key(body.key)
    if digest is None:
        raise ApiError(401, "invalid API key", code="invalid_api_key")
    response = JSONResponse({"ok": True, "expires_in_s": int(keys.session_s)})
    response.set_cookie(SESSION_COOKIE, keys.session_for(digest), max_age=int(keys.session_s), httponly=True,
                        samesite="strict", path="/")
    return response


@router.get("/dashboard/data", dependencies=[Depends(require_viewer)], responses={401: {"description": "Sign in"}})
async def data(request: Request, window_s: int = Query(3600, ge=60, le=30 * 86400)) -> dict[str, Any]:
    """What the dashboard draws, for the last `window_s` seconds."""
    state = server_state(request)
    return await run_in_threadpool(dashboard_data, state, window_s, time.time())


def dashboard_data(state: ServerState, window_s: int, now: float) -> dict[str, Any]:
    """Charts, totals, latest answers and feedback from the monitor database (read-only connection)."""
    conn = connect(state.monitor.path, readonly=True)
    try:
        since = now - window_s
        rows = conn.execute("SELECT created, status, latency_s FROM requests WHERE created >= ? ORDER BY created",
                            (since,)).fetchall()
        checks = conn.execute("SELECT created, label, passed FROM checks WHERE created >= ? ORDER BY created",
                              (since,)).fetchall()
        latest = conn.execute("SELECT * FROM requests ORDER BY created DESC LIMIT ?", (LATEST,)).fetchall()
        feedback = conn.execute("SELECT * FROM feedback ORDER BY id DESC LIMIT ?", (LATEST,)).fetchall()
        ratings = dict(conn.execute("SELECT rating, COUNT(*) FROM feedback GROUP BY rating").fetchall())
    finally:
        conn.close()
    start = rows[0]["created"] if rows else now
    bucket_s = next((b for b in NICE_BUCKETS_S if b * BUCKETS >= now - start), NICE_BUCKETS_S[-1])
    first = math.floor(start / bucket_s) * bucket_s
    n = int((now - first) // bucket_s) + 1
    series = _series(rows, checks, first, bucket_s, n)
    labels = sorted({c["label"] for c in checks})
    passed = {label: [c["passed"] for c in checks if c["label"] == label] for label in labels}
    return {
        "model": state.model_name, "run_id": state.run_id, "now": now, "window_s": window_s, "bucket_s": bucket_s,
        "buckets": [first + i * bucket_s for i in range(n)], **series,
        "totals": {
            "requests": len(rows), "errors": sum(r["status"] != 200 for r in rows),
            "latency_p50_s": _percentile([r["latency_s"] for r in rows if r["status"] == 200], 0.5),
            "pass_rate": {label: sum(v) / len(v) for label, v in passed.items()},
            "feedback": ratings, "queue_depth": state.engine.depth(), "running": state.engine.running(),
        },
        "latest": [_answer(r) for r in latest],
        "feedback": [_feedback(r) for r in feedback],
    }


def _series(rows: list[Any], checks: list[Any], first: float, bucket_s: int, n: int) -> dict[str, Any]:
    """Per bucket: requests answered and failed, latency p50/p95 of the answered, pass rate per constraint."""
    ok, failed = [0] * n, [0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]
    for row in rows:
        i = min(int((row["created"] - first) // bucket_s), n - 1)
        if row["status"] == 200:
            ok[i] += 1
            latencies[i].append(row["latency_s"])
        else:
            failed[i] += 1
    tallies: dict[str, list[list[int]]] = {}
    for check in checks:
        i = min(int((check["created"] - first) // bucket_s), n - 1)
        tally = tallies.setdefault(check["label"], [[0, 0] for _ in range(n)])[i]
        tally[0] += check["passed"]
        tally[1] += 1
    return {
        "volume": {"ok": ok, "error": failed},
        "latency": {"p50": [_percentile(v, 0.5) for v in latencies], "p95": [_percentile(v, 0.95) for v in latencies]},
        "compliance": {label: [p / c if c else None for p, c in t] for label, t in sorted(tallies.items())},
    }


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _answer(row: Any) -> dict[str, Any]:
    messages = json.loads(row["messages"]) if row["messages"] else []
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
    return {
        "id": row["id"], "created": row["created"], "status": row["status"], "finish_reason": row["finish_reason"],
        "latency_s": row["latency_s"], "completion_tokens": row["completion_tokens"],
        "prompt": _clip(prompt if prompt is not None else (row["messages_sha256"] and f"sha256 {row['messages_sha256'][:16]}")),
        "response": _clip(row["response"] if row["response"] is not None else
                          (row["response_sha256"] and f"sha256 {row['response_sha256'][:16]}")),
        "checks": json.loads(row["checks"]), "error": row["error"],
    }


def _feedback(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "created": row["created"], "completion_id": row["completion_id"], "rating": row["rating"],
            "score": row["score"], "comment": _clip(row["comment"]), "correction": _clip(row["correction"])}


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + "…"
