"""The `eval` section of adhere.yaml: how instruction following is measured (step 5)."""

from __future__ import annotations

from typing import Literal

from adhere.config_fields import PositiveInt, Section


class EvalConfig(Section):
    """Base vs tuned on held-out instructions."""

    suites: list[Literal["held_out", "ifeval"]] = ["held_out"]
    """'held_out': the eval split of the project's data; 'ifeval': the 541 IFEval prompts."""
    max_new_tokens: PositiveInt = 512
    """Longest response to generate."""
    batch_size: PositiveInt = 8
    """Prompts generated together."""
    seed: int = 0
    """Seed for generation and bootstrap confidence intervals."""
