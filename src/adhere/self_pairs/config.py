"""The `dpo.self_pairs` section of adhere.yaml: preference pairs from the model's own graded answers.

    dpo:
      self_pairs:
        samples: 4                  # answers sampled per training prompt
        grader: item_f1             # item_f1 | rouge_l | exact_match | checks
        item: suggestion            # which eval.item_f1 entry
        margin: 0.3                 # chosen must beat rejected by this much
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from adhere.config_fields import Fraction, NonNegativeFloat, NonNegativeInt, PositiveInt, Section, error_at
from adhere.generation.refs import ModelRef
from adhere.synth.config import BudgetConfig

Grader = Literal["item_f1", "rouge_l", "exact_match", "checks"]


class SelfPairsConfig(Section):
    """Pairs from the model's own answers (`adhere self-pairs`): N samples per training prompt, each graded against
    the prompt's reference answer; the reference (or the best sample) is chosen, the worst sample rejected."""

    model: ModelRef = ModelRef(name="sft", kind="sft")
    """The model that answers: 'sft' (what `adhere train` wrote, the default), 'base', or a {name, kind: folder, path}
    or endpoint; `engine: vllm` samples through vLLM. Not 'tuned', which is the DPO model these pairs train."""
    samples: PositiveInt = 4
    """Answers sampled per prompt (sample k with seed + k); the lowest-scoring one is the rejected side."""
    temperature: NonNegativeFloat = 1.0
    """Sampling temperature: 1.0 samples the model's own distribution, so the rejected answers are mistakes it makes."""
    top_p: Fraction = 0.95
    """Nucleus sampling mass."""
    max_new_tokens: PositiveInt = 512
    """Longest answer; a cut-off answer stays a candidate (it scores what it scores)."""
    grader: Grader = "item_f1"
    """What ranks answers against the reference, each in [0, 1]: 'item_f1', the F1 of list items (eval.item_f1[item]);
    'rouge_l', ROUGE-L F1; 'exact_match', 1 or 0; 'checks', the share of the spec's checks passed (format, schema,
    constraints)."""
    item: str = ""
    """The eval.item_f1 entry 'item_f1' scores (e.g. 'suggestion'); empty means its first entry."""
    checks_weight: Fraction = 0.0
    """Blend in the spec's checks: score = (1 - checks_weight) x grader + checks_weight x share of checks passed."""
    margin: Fraction = 0.3
    """Keep a pair only when chosen's score - rejected's score is at least this: issue 16 measured pairs that differ in
    wording, not in findings, teaching nothing. With item F1, one of three findings missed is a gap of 0.2, one found
    of three plus one invented 0.6."""
    chosen: Literal["reference", "best"] = "reference"
    """The chosen side: the prompt's reference answer, or the best-scoring sample (on-policy on both sides)."""
    max_prompts: NonNegativeInt = 0
    """Use at most this many training prompts (the first ones of workdir/data/train.jsonl); 0 means all."""
    validation_fraction: Fraction = 0.1
    """Share of the prompts whose pairs go to pairs_valid.jsonl for dpo.eval_every's held-out reward accuracy
    (seeded, from 5 pairs, as data.pairs); 0 keeps every pair for training."""
    batch_size: PositiveInt = 8
    """Chats generated together (a local model's batch); the budget is checked between batches."""
    seed: int = 0
    """Sampling seed: sample k of every prompt uses seed + k, so a rerun asks the same and hits the cache."""
    budget: BudgetConfig = BudgetConfig()
    """A hard stop on the answers sampled (cached ones count, as in synth)."""

    @field_validator("model")
    @classmethod
    def _not_tuned(cls, value: ModelRef) -> ModelRef:
        if value.kind == "tuned":
            raise error_at(("kind",), "the sampling model cannot be 'tuned', the DPO model these pairs train; use 'sft' "
                           "(what `adhere train` wrote), 'base', a folder or an endpoint")
        return value
