"""A server process that adhere starts, waits for, and stops with everything it spawned.

    with ServerProcess(argv, log_path=run_dir / "vllm.log", ready_url="http://127.0.0.1:8123/health",
                       name="vLLM") as server:
        ...  # talk to it over HTTP

The process starts in its own session, so it and its children (vLLM's engine core and worker)
form one process group: stopping sends SIGTERM to the whole group, waits, then SIGKILL, so
nothing is left running after success, an error or Ctrl-C. Should adhere itself be killed
(SIGKILL, out of memory), a watchdog at the head of the group notices: it holds the read end of
a pipe whose write end only adhere holds, and when the kernel closes that end it ends the group. Its stdout and stderr go to the log
file; a server that exits or never becomes ready is a UserError that quotes the log's last lines.
Used by the vllm engine (`adhere.generation.vllm`); nothing here knows about vLLM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from adhere.errors import UserError

TAIL_LINES = 25  # of the server's log quoted in an error: a Python traceback's last frames and its message
POLL_S = 0.5  # between readiness checks; vLLM on 2 cores takes 30-110 s to start, so 0.5 s costs nothing
STOP_GRACE_S = 20.0  # after SIGTERM; vLLM shuts its engine core and worker down in about 3 s on 2 cores
# Runs the server as its child, in the server's process group, and ends the group once the pipe from
# adhere reaches end of file: adhere exited without stop(). It exits with the server's exit code.
WATCHDOG = """import os, signal, subprocess, sys, threading, time
def orphaned():
    while os.read(int(sys.argv[1]), 1):
        pass
    os.killpg(0, signal.SIGTERM)
    time.sleep(%(grace)s)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=orphaned, daemon=True).start()
# stop() sends the group SIGTERM: the server shuts down, and this exits when it has (a no-op handler,
# not SIG_IGN, which the server would inherit)
signal.signal(signal.SIGTERM, lambda *_: None)
server = subprocess.Popen(sys.argv[2:])
while True:
    try:
        code = server.wait()
        sys.exit(128 - code if code < 0 else code)  # killed by signal N: 128 + N, as a shell reports it
    except InterruptedError:
        pass""" % {"grace": STOP_GRACE_S}


class ServerProcess:
    """One server process group: started by `start()` (or `with`), stopped by `stop()`, never orphaned."""

    def __init__(self, argv: list[str], *, log_path: Path, ready_url: str, name: str, timeout_s: float,
                 env: Mapping[str, str] | None = None, hint: str = "") -> None:
        """`ready_url` answers 200 once the server is ready; `hint` ends every start error (what to try)."""
        self.argv, self.log_path, self.ready_url, self.name = argv, log_path, ready_url, name
        self.timeout_s, self.env, self.hint = timeout_s, dict(env) if env is not None else None, hint
        self.process: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # the pipe's write end: closed by stop(), or by the kernel if adhere dies
        self.start_seconds = 0.0  # how long the last start took until ready

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and return once `ready_url` answers 200; UserError (and nothing left running) if not."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if not os.access(self.argv[0], os.X_OK) or os.path.isdir(self.argv[0]):
            raise UserError(f"cannot start {self.name}: {self.argv[0]} is not an executable file. {self.hint}".strip())
        watch, self._lifeline = os.pipe()  # both ends close-on-exec; only the read end is passed on
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", WATCHDOG, str(watch), *self.argv], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self.env, pass_fds=(watch,),
                    start_new_session=True,  # its own process group: stop() signals the server and its children
                )
            except OSError as exc:  # adhere's own Python cannot start (out of processes, out of memory)
                self._close_lifeline()
                raise UserError(f"cannot start {self.name} ({self.argv[0]}): {exc}. {self.hint}".strip()) from None
            finally:
                os.close(watch)
        try:
            self._wait_ready(started)
        except BaseException:  # not ready, timed out, Ctrl-C while waiting: leave nothing behind
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - started

    def _wait_ready(self, started: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: never via a proxy
        while True:
            process = self.process  # None once stop() ran in another thread (a server shut down while loading)
            if process is None:
                raise UserError(f"{self.name} was stopped while it was starting")
            code = process.poll()
            if code is not None:
                raise UserError(self._failure(f"exited with code {code} before it was ready"))
            try:
                with opener.open(self.ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening yet, or still loading
                pass
            if time.perf_counter() - started > self.timeout_s:
                raise UserError(self._failure(f"was not ready after {self.timeout_s:g} s (no 200 from {self.ready_url})"))
            time.sleep(POLL_S)

    def _failure(self, what: str) -> str:
        tail = self.log_tail()
        lines = f"; its last lines:\n{tail}\n" if tail else "; its log is empty. "
        return f"{self.name} {what}. Its output is in {self.log_path}{lines}{self.hint}".rstrip()

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after STOP_GRACE_S; safe to call twice."""
        process, self.process = self.process, None
        self._close_lifeline()
        if process is None:
            return
        group = process.pid  # start_new_session made the server the leader of its own group
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        while group_alive(group) and time.monotonic() < deadline:  # children may outlive the leader briefly
            time.sleep(0.1)
        if group_alive(group):
            _signal_group(group, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=5)

    def _close_lifeline(self) -> None:
        lifeline, self._lifeline = self._lifeline, None
        if lifeline is not None:
            os.close(lifeline)

    @property
    def running(self) -> bool:
        """Whether the server process is still alive."""
        return self.process is not None and self.process.poll() is None

    def exited(self, wait_s: float = 0.0) -> bool:
        """Whether the server process has ended, waiting up to `wait_s` for it to."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last `lines` lines of the server's log (empty if there is none)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))  # 64 KiB holds far more than 25 lines of a traceback
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):  # already gone
        pass


def group_alive(group: int) -> bool:
    """Whether a process of the group is still running (zombies waiting for their parent's wait() do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: signal 0 says whether any member exists, zombies included
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
