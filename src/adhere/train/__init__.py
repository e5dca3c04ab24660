"""Step 4: tune. `adhere.train.run(config)` writes workdir/train/."""

from adhere.train.stage import run

__all__ = ["run"]
