"""Step 6, deploy and monitor: `adhere.serve.run(config)` serves the tuned model; see `stage.py`.

FastAPI, uvicorn and prometheus-client are imported on first use, so reading the config stays cheap.
"""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """`adhere.serve.stage.run`: serve until interrupted."""
    from adhere.serve.stage import run as stage_run

    return stage_run(*args, **kwargs)


def export_feedback(*args: Any, **kwargs: Any) -> Any:
    """`adhere.serve.stage.export_feedback`: feedback as the next round's training records."""
    from adhere.serve.stage import export_feedback as export

    return export(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Server":  # `from adhere.serve import Server`, without importing FastAPI for `run` alone
        from adhere.serve.stage import Server

        return Server
    raise AttributeError(name)


__all__ = ["Server", "export_feedback", "run"]
