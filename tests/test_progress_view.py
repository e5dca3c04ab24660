"""Progress off a terminal: a line when a bar starts, at most every `every` seconds, and when it completes."""

from __future__ import annotations

import io

from rich.console import Console

import adhere.progress_view as progress_view
from adhere.progress_view import ProgressView


def test_a_log_gets_throttled_plain_lines_with_an_eta(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_view.time, "monotonic", lambda: clock[0])
    buffer = io.StringIO()
    with ProgressView(Console(file=buffer, width=200), every=30) as view:
        assert not view.live
        view.print("[bold]stage[/] 1")
        view.update("eval", "answers", 5, 20)  # a burst: a batch of 5 answers at once
        clock[0] += 60
        view.update("eval", "answers", 10, 20)
        view.print("stage 2")  # a new bar's clock starts at the last message
        for step in range(1, 11):
            clock[0] += 10  # 10 s a step
            view.update("train", "train: loss 0.5 [x]", step, 10)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "stage 1"
    # step 1 (start), step 4 (30 s later), step 7, and step 10 (complete); markup-like text is kept as is
    assert lines[1:3] == ["answers  5/20  0:00 elapsed", "answers  10/20  1:00 elapsed, about 2:00 left"]
    assert lines[3:] == [
        "stage 2",
        "train: loss 0.5 [x]  1/10  0:10 elapsed",  # no rate yet
        "train: loss 0.5 [x]  4/10  0:40 elapsed, about 1:00 left",
        "train: loss 0.5 [x]  7/10  1:10 elapsed, about 0:30 left",
        "train: loss 0.5 [x]  10/10  1:40 elapsed",
    ]


def test_disabled_view_prints_nothing() -> None:
    buffer = io.StringIO()
    with ProgressView(Console(file=buffer), enabled=False) as view:
        view.print("hello")
        view.update("x", "x", 1, 2)
    assert buffer.getvalue() == ""
