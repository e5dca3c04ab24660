"""Step 5, evaluate instruction following: `adhere.eval.run(config)` writes workdir/eval/; see `stage.py`."""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """`adhere.eval.stage.run`, imported on first use so that reading the config stays cheap."""
    from adhere.eval.stage import run as stage_run

    return stage_run(*args, **kwargs)


__all__ = ["run"]
