"""Step 4b's own data: preference pairs from the model's own answers. `adhere.self_pairs.run(config)` writes
workdir/self_pairs/."""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """`adhere.self_pairs.stage.run`, imported on first use so that reading the config stays cheap."""
    from adhere.self_pairs.stage import run as stage_run

    return stage_run(*args, **kwargs)


__all__ = ["run"]
