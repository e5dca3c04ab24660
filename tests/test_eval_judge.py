"""The LLM judge: prompts, robust verdict parsing, position swapping, with a deterministic fake judge."""

from __future__ import annotations

import re

from adhere.eval import judge
from adhere.eval.suites import Item
from adhere.generation import Generation, GenerationParams
from adhere.spec.config import SpecConfig

RUBRIC = [
    {"name": "format", "description": "Valid JSON?", "scores": {i: f"format level {i}" for i in range(1, 6)}},
    {"name": "correctness", "description": "Right issues?", "scores": {i: f"correct level {i}" for i in range(1, 6)}},
]


class FakeJudge:
    """Answers from the chat alone: scores by whether the response looks like JSON; prefers the JSON answer.

    `biased=True` always says [[A]], as a position-biased judge would; `garbage` ids get unreadable text.
    """

    name = identity = "fake-judge"

    def __init__(self, biased: bool = False, garbage: tuple[str, ...] = ()):
        self.biased, self.garbage, self.calls = biased, garbage, 0

    def generate(self, chats, params, progress=None):
        self.calls += len(chats)
        return [Generation(self._answer(chat[-1]["content"]), "stop", 10, 5) for chat in chats]

    def _answer(self, text: str) -> str:
        if any(g in text for g in self.garbage):
            return "I cannot decide, both are interesting."
        if "[Response A]" in text:
            if self.biased:
                return "A looks better. [[A]]"
            a = re.search(r"\[Response A\]\n(.*?)\n\[End of response A\]", text, re.S).group(1)
            b = re.search(r"\[Response B\]\n(.*?)\n\[End of response B\]", text, re.S).group(1)
            if a.startswith("{") == b.startswith("{"):
                return "Equally good. [[C]]"
            return "Verdict: [[A]]" if a.startswith("{") else "B follows the format. [[B]]"
        response = re.search(r"\[Response to grade\]\n(.*?)\n\[End of response\]", text, re.S).group(1)
        good = response.startswith("{")
        return f"**format**: {5 if good else 1}/5\ncorrectness: {4 if good else 2}\nThe JSON is {'fine' if good else 'missing'}."


def items(n: int = 4) -> list[Item]:
    return [Item(f"p{i}", [{"role": "user", "content": f"Review snippet {i}."}], reference='{"issues": []}') for i in range(n)]


def test_parse_scores_reads_each_criterion_and_common_single_score_forms():
    names = ["format", "correctness"]
    assert judge.parse_scores("format: 4\ncorrectness: 5\nGood.", names) == {"format": 4, "correctness": 5}
    assert judge.parse_scores("**Format** = 3/5\n- correctness - 2", names) == {"format": 3, "correctness": 2}
    assert judge.parse_scores("format: 4 only", names) is None  # a criterion is missing: not guessed
    for text in ("Score: 4", "I give it [[4]].", "This earns 4/5.", "4", "instruction_following: 4"):
        assert judge.parse_scores(text, ["instruction_following"]) == {"instruction_following": 4}, text
    for text in ("", "Score: 9", "no number here", "6/5"):
        assert judge.parse_scores(text, ["instruction_following"]) is None, text


def test_parse_preference_takes_the_last_verdict():
    assert judge.parse_preference("Between [[A]] and [[B]], I pick [[B]]") == "B"
    assert judge.parse_preference("tie: [[C]]") == "C"
    assert judge.parse_preference("[[tie]]") == "C"
    assert judge.parse_preference("A is better") is None


def test_combine_counts_disagreeing_verdicts_as_ties():
    assert judge.combine("B", "A") == (1.0, False)  # the model won in both positions
    assert judge.combine("A", "B") == (0.0, False)
    assert judge.combine("C", "C") == (0.5, False)
    assert judge.combine("A", "A") == (0.5, True)  # followed the position: inconsistent, a tie
    assert judge.combine("B", "C") == (0.5, True)
    assert judge.combine(None, "A") == (None, False)


def test_judge_scores_with_rubric_and_unparseable_verdicts_counted():
    spec = SpecConfig.model_validate({"task": "code_review", "rubric": RUBRIC})
    answers = {"p0": '{"issues": []}', "p1": "Looks fine to me.", "p2": "GARBAGE"}
    fake = FakeJudge(garbage=("GARBAGE",))
    graded = judge.judge_scores(fake, GenerationParams(max_new_tokens=64), spec, items(), answers)
    assert set(graded) == {"p0", "p1", "p2"}  # p3 had no answer: not asked
    assert graded["p0"]["criteria"] == {"format": 5, "correctness": 4} and graded["p0"]["score"] == 4.5
    assert graded["p1"]["score"] == 1.5
    assert graded["p2"]["score"] is None and "cannot decide" in graded["p2"]["text"]


def test_score_chat_shows_rubric_reference_and_default_criterion():
    spec = SpecConfig.model_validate({"task": "code_review", "rubric": RUBRIC})
    text = judge.score_chat(spec, judge.criteria(spec), items(1)[0], "RESPONSE")[0]["content"]
    assert "format level 5" in text and "correct level 1" in text and '{"issues": []}' in text and "RESPONSE" in text
    default = judge.criteria(SpecConfig())
    assert [c.name for c in default] == ["instruction_following"]


def test_pairwise_swaps_positions_and_a_biased_judge_gives_only_ties():
    model = {"p0": '{"a": 1}', "p1": '{"a": 1}', "p2": "plain", "p3": "plain"}
    base = {"p0": "plain", "p1": '{"b": 2}', "p2": '{"b": 2}', "p3": "plain"}
    fair = judge.judge_pairs(FakeJudge(), GenerationParams(), items(), model, base, ("tuned", "base"))
    assert fair.outcomes == {"p0": 1.0, "p1": 0.5, "p2": 0.0, "p3": 0.5}
    assert fair.counts() == {"model": "tuned", "baseline": "base", "wins": 1, "losses": 1, "ties": 2,
                             "inconsistent": 0, "unparseable": 0}
    biased = judge.judge_pairs(FakeJudge(biased=True), GenerationParams(), items(), model, base, ("tuned", "base"))
    assert set(biased.outcomes.values()) == {0.5} and len(biased.inconsistent) == 4


def test_pairwise_unparseable_is_counted_not_dropped():
    model = {"p0": '{"a": 1}', "p1": "GARBAGE"}
    base = {"p0": "x", "p1": "y"}
    result = judge.judge_pairs(FakeJudge(garbage=("GARBAGE",)), GenerationParams(), items(2), model, base, ("t", "b"))
    assert result.outcomes == {"p0": 1.0, "p1": None}
    assert result.counts()["unparseable"] == 1
