"""Step 2: collect and curate data. `adhere.data.run(config)` writes workdir/data/."""

from adhere.data.stage import run

__all__ = ["run"]
