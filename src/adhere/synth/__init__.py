"""Step 2, synthetic path: instruction data from a teacher model. `adhere.synth.run(config)` writes workdir/synth/."""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """`adhere.synth.stage.run`, imported on first use so that reading the config stays cheap."""
    from adhere.synth.stage import run as stage_run

    return stage_run(*args, **kwargs)


__all__ = ["run"]
