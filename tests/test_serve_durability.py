"""Step 6: feedback survives the server being killed. Every acknowledged feedback is in the database after a restart.

The server runs in its own process (`adhere.serve.run`, as `adhere serve` calls it) while four
clients post feedback as fast as it answers; it is killed with SIGKILL mid-stream of writes,
started again on the same monitor.db, and every feedback it had answered 200 for must be there.
A feedback counts as acknowledged only when its 200 response was read in full.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from test_serve_support import (  # noqa: F401  (fixtures)
    auth,
    chat,
    db_rows,
    long_tiny_dir_fixture,
    one_torch_thread_fixture,
    start_server,
    write_project,
)

CLIENTS = 4
ACKS_BEFORE_KILL = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(path: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """`adhere.serve.run(config)` in a child process; returns once /ready answers 200."""
    code = ("import sys; from adhere.config import load_config; from adhere.serve import run; "
            "run(load_config(sys.argv[1], [f'serve.port={sys.argv[2]}']))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_torch_thread in test_serve_support
    process = subprocess.Popen([sys.executable, "-c", code, str(path), str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server process exited before it was ready"
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the server was not ready within 120 s")


def test_every_acknowledged_feedback_survives_sigkill(tmp_path: Path, long_tiny_dir: Path) -> None:
    path, port = write_project(tmp_path, long_tiny_dir), free_port()
    process, url = start(path, port)
    try:
        ids = [httpx.post(f"{url}/v1/chat/completions", headers=auth(), timeout=30,
                          json={"model": "p", "messages": chat(f"Question {i}"), "max_tokens": 2}).json()["id"]
               for i in range(3)]
        acked: list[dict[str, Any]] = []
        lock = threading.Lock()

        def post_until_refused(worker: int) -> None:
            with httpx.Client(timeout=10) as http:
                for n in range(10_000):
                    comment = f"client {worker} note {n}"
                    try:
                        response = http.post(f"{url}/v1/feedback", headers=auth(), json={
                            "completion_id": ids[n % 3], "rating": 1 + n % 5, "comment": comment})
                    except httpx.TransportError:  # the server is gone
                        return
                    assert response.status_code == 200, response.text
                    with lock:
                        acked.append({**response.json(), "comment": comment})

        clients = [threading.Thread(target=post_until_refused, args=(w,)) for w in range(CLIENTS)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)  # while the clients are still posting
        process.wait()
        for thread in clients:
            thread.join(15)
        assert len(acked) >= ACKS_BEFORE_KILL
    finally:
        if process.poll() is None:
            process.kill()

    # Started again on the same monitor.db (in this process: a second child would cost ~10 s of imports),
    # which SQLite recovers from its write-ahead log on opening.
    with start_server(tmp_path, long_tiny_dir) as server:
        answer = httpx.get(f"{server.url}/dashboard/data", headers=auth(), timeout=10).json()
        assert sum(answer["totals"]["feedback"].values()) >= len(acked)
    stored = {f"feedback-{r['id']}": r for r in db_rows(tmp_path, "SELECT * FROM feedback")}
    for ack in acked:
        row = stored[ack["id"]]
        assert (row["completion_id"], row["score"], row["comment"]) == (ack["completion_id"], ack["score"], ack["comment"])
    assert {r["id"] for r in db_rows(tmp_path, "SELECT id FROM requests")} >= set(ids)
