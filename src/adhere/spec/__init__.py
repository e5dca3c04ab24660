"""Step 1: the spec, what the tuned model must do. `adhere.spec.run(config)` writes workdir/spec/."""

from adhere.spec.stage import check_response, run

__all__ = ["check_response", "run"]
