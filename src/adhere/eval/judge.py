"""The LLM judge: rubric scores for each response, and pairwise preference with positions swapped.

    eval:
      suites: [held_out, judge]
      judge: {model: {name: judge, kind: endpoint, url: http://localhost:8000/v1, model: my-judge}}

Single-answer grading: the judge sees the spec's rubric (each criterion with
what earns a 1 to a 5), the instruction, the reference answer when there is
one, and the response, and writes one line `criterion: N` per criterion; the
response's score is the mean over criteria. Pairwise: the judge sees the
baseline's and another model's answers as "A" and "B" and ends with [[A]],
[[B]] or [[C]] (a tie); every pair is asked twice with the positions swapped,
because judges favour a position (MT-Bench, Zheng et al. 2023, measured this
for GPT-4 too). Two verdicts that disagree count as a tie. A verdict that
cannot be read is counted as unparseable and shown, never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adhere.eval.suites import Item
    from adhere.spec.config import Criterion, SpecConfig

# Used when spec.rubric is empty, so the judge suite still measures what adhere is about.
DEFAULT_CRITERION = {
    "name": "instruction_following",
    "description": "Does the response do what the instruction asks, in the format it asks for?",
    "scores": {
        1: "Ignores or misreads the instruction.",
        2: "Addresses the topic but misses most requirements or the format.",
        3: "Follows the main request but misses some requirements or the format.",
        4: "Follows the instruction and format with minor slips.",
        5: "Follows every requirement and the format exactly.",
    },
}
VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)


def criteria(spec: SpecConfig) -> list[Criterion]:
    """The rubric to grade with: spec.rubric, or adhere's default instruction-following criterion."""
    from adhere.spec.config import Criterion

    return list(spec.rubric) or [Criterion.model_validate(DEFAULT_CRITERION)]


def score_chat(spec: SpecConfig, rubric: list[Criterion], item: Item, response: str) -> list[dict[str, str]]:
    """The judge's chat for grading one response against the rubric."""
    lines = [f"You are grading one response of an AI assistant. The assistant's task: {spec.description or spec.task}."]
    lines.append("\nRubric (score each criterion from 1 to 5):")
    for criterion in rubric:
        lines.append(f"\n{criterion.name}: {criterion.description}")
        lines += [f"  {score}: {criterion.scores[score]}" for score in sorted(criterion.scores)]
    lines.append(f"\n[Instruction]\n{_conversation(item)}")
    if item.reference:
        lines.append(f"\n[Reference answer]\n{item.reference}")
    lines.append(f"\n[Response to grade]\n{response}\n[End of response]")
    names = ", ".join(c.name for c in rubric)
    lines.append(f"\nFor each criterion ({names}) write one line `name: N` with N from 1 to 5, then one sentence why.")
    return [{"role": "user", "content": "\n".join(lines)}]


def pair_chat(item: Item, first: str, second: str) -> list[dict[str, str]]:
    """The judge's chat for comparing two responses, `first` shown as A."""
    text = (
        "Compare two responses of AI assistants to the same instruction. Judge which follows the instruction "
        "better: its requirements, constraints and output format, then correctness. Ignore length and the order "
        f"in which they are shown.\n\n[Instruction]\n{_conversation(item)}\n"
        + (f"\n[Reference answer]\n{item.reference}\n" if item.reference else "")
        + f"\n[Response A]\n{first}\n[End of response A]\n\n[Response B]\n{second}\n[End of response B]\n\n"
        "Explain briefly, then end with [[A]] if A is better, [[B]] if B is better, or [[C]] for a tie."
    )
    return [{"role": "user", "content": text}]


def _conversation(item: Item) -> str:
    turns = [m for m in item.messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in turns)


def parse_scores(text: str, names: list[str]) -> dict[str, int] | None:
    """Each criterion's 1-5 score from the judge's text, or None when any is missing.

    Accepts `name: 4`, `**name**: 4/5`, `name = 4`; with one criterion also `Score: 4`, `[[4]]`, `4/5` or a bare `4`.
    """
    found: dict[str, int] = {}
    for name in names:
        pattern = rf"(?im)^[\s*#_-]*{re.escape(name)}[\s*_]*[:=\-]\s*\**\s*\[*([1-5])\]*(?:\s*/\s*5)?\b"
        match = re.search(pattern, text)
        if match:
            found[name] = int(match.group(1))
    if len(names) == 1 and names[0] not in found:
        for pattern in (r"(?i)\bscore\b\W{0,3}([1-5])\b", r"\[\[([1-5])\]\]", r"\b([1-5])\s*/\s*5\b", r"^\s*([1-5])\s*$"):
            match = re.search(pattern, text, flags=re.MULTILINE)
            if match:
                found[names[0]] = int(match.group(1))
                break
    return found if len(found) == len(names) else None


def parse_preference(text: str) -> str | None:
    """'A', 'B' or 'C' (tie) from the last [[...]] verdict in the judge's text; None when there is none."""
    verdicts = VERDICT.findall(text)
    if not verdicts:
        return None
    last = verdicts[-1].upper()
    return "C" if last == "TIE" else last


@dataclass
class Pairwise:
    """Pairwise outcomes of `model` against `baseline`, per prompt: 1 win, 0.5 tie, 0 loss (None: unparseable)."""

    model: str
    baseline: str
    outcomes: dict[str, float | None] = field(default_factory=dict)
    inconsistent: list[str] = field(default_factory=list)  # prompts whose two verdicts disagreed (counted as ties)
    raw: dict[str, list[str]] = field(default_factory=dict)  # the judge's two texts per prompt

    def counts(self) -> dict[str, Any]:
        values = list(self.outcomes.values())
        return {
            "model": self.model,
            "baseline": self.baseline,
            "wins": values.count(1.0),
            "losses": values.count(0.0),
            "ties": values.count(0.5),
            "inconsistent": len(self.inconsistent),
            "unparseable": values.count(None),
        }


def combine(first: str | None, second: str | None) -> tuple[float | None, bool]:
    """One prompt's outcome for the model from its two verdicts (model as B, then as A), and whether they disagreed."""
    if first is None or second is None:
        return None, False
    as_b = {"B": 1.0, "A": 0.0, "C": 0.5}[first]
    as_a = {"A": 1.0, "B": 0.0, "C": 0.5}[second]
    if as_b == as_a:
        return as_b, False
    return 0.5, True  # the verdict followed the position, not the answer: a tie


def judge_scores(backend: Any, params: Any, spec: SpecConfig, items: list[Item], responses: dict[str, str]) -> dict:
    """Rubric scores of one model's responses: {item id: {"score": mean or None, "criteria": {...}, "text": ...}}."""
    rubric = criteria(spec)
    names = [c.name for c in rubric]
    asked = [item for item in items if item.id in responses]
    outputs = backend.generate([score_chat(spec, rubric, item, responses[item.id]) for item in asked], params)
    out = {}
    for item, generation in zip(asked, outputs):
        parsed = parse_scores(generation.text, names) if generation.finish_reason != "error" else None
        out[item.id] = {
            "score": sum(parsed.values()) / len(parsed) if parsed else None,
            "criteria": parsed,
            "text": generation.text if generation.finish_reason != "error" else f"judge error: {generation.error}",
        }
    return out


def judge_pairs(backend: Any, params: Any, items: list[Item], model: dict[str, str], baseline: dict[str, str],
                names: tuple[str, str]) -> Pairwise:
    """Ask the judge about every prompt both models answered, twice with positions swapped."""
    asked = [item for item in items if item.id in model and item.id in baseline]
    chats = [pair_chat(item, baseline[item.id], model[item.id]) for item in asked]  # model as B
    chats += [pair_chat(item, model[item.id], baseline[item.id]) for item in asked]  # model as A
    outputs = backend.generate(chats, params)
    result = Pairwise(model=names[0], baseline=names[1])
    for i, item in enumerate(asked):
        texts = [outputs[i], outputs[i + len(asked)]]
        verdicts = [parse_preference(g.text) if g.finish_reason != "error" else None for g in texts]
        outcome, disagreed = combine(*verdicts)
        result.outcomes[item.id] = outcome
        result.raw[item.id] = [g.text if g.finish_reason != "error" else f"judge error: {g.error}" for g in texts]
        if disagreed:
            result.inconsistent.append(item.id)
    return result
