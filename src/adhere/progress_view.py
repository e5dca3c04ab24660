"""Progress bars in a terminal, and a line every half minute in a log (CI, nohup, a pipe).

    with ProgressView(err) as view:
        view.update("train", "train: loss 0.412", done=12, total=30)
        view.print("baseline: done in 182 s")

rich draws live bars only on a terminal; written to a file it shows nothing until the end, so a
45-minute run in CI looks hung. Off a terminal each bar becomes a plain line (label, done/total,
elapsed since the last message, ETA), printed at the bar's first update, at most every `every` seconds, and when it completes.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape


class ProgressView:
    """Named bars, each updated with (description, done, total); live on a terminal, periodic lines elsewhere."""

    def __init__(self, console: Console, *, every: float = 30.0, enabled: bool = True) -> None:
        self.console = console
        self.every = every
        self.enabled = enabled
        self.live = console.is_terminal
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._plain: dict[str, dict[str, float]] = {}  # key -> {"started", "printed", "done"}
        self._mark = time.monotonic()  # a new bar's clock starts here: the last message said its work began

    def __enter__(self) -> ProgressView:
        if self.live and self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def print(self, message: str, **kwargs: Any) -> None:
        """A line above the bars (rich markup allowed)."""
        self._mark = time.monotonic()
        if not self.enabled:
            return
        (self._progress.console if self._progress is not None else self.console).print(message, **kwargs)

    def update(self, key: str, description: str, done: int, total: int | None) -> None:
        """Set bar `key` to `done` of `total` with `description` (plain text, not markup)."""
        if not self.enabled:
            return
        if self._progress is not None:
            if key not in self._tasks:
                self._tasks[key] = self._progress.add_task(escape(description), total=total)
            self._progress.update(self._tasks[key], completed=done, total=total, description=escape(description))
            return
        now = time.monotonic()
        state = self._plain.setdefault(key, {"started": self._mark, "printed": -1.0, "done": -1,
                                             "first_time": now, "first_done": done})
        complete = total is not None and done >= total
        if done == state["done"] or (state["printed"] >= 0 and not complete and now - state["printed"] < self.every):
            return
        state["printed"], state["done"] = now, done
        elapsed = now - state["started"]
        line = f"{description}  {done}/{total if total is not None else '?'}  {_clock(elapsed)} elapsed"
        # The rate since the first update: loading time is not work done, and answers that arrive in bursts
        # (a batch at a time) give no rate until the second burst.
        if total and done < total and done > state["first_done"] and now > state["first_time"]:
            rate = (done - state["first_done"]) / (now - state["first_time"])
            line += f", about {_clock((total - done) / rate)} left"
        self.console.print(line, markup=False, highlight=False)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
