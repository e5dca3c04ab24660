"""The `synth` section of adhere.yaml: synthetic instruction data from a teacher model (step 2, third way).

    synth:
      mode: constraints             # self_instruct | constraints | rewrite
      teacher: base                 # model.base; or {name, kind: folder, path} or {name, kind: endpoint, endpoint: {...}}
      seed_file: prompts.jsonl
      target: 500
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from adhere.config_fields import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Section,
    error_at,
    resolve_path,
)
from adhere.generation.refs import ModelRef

# Self-Instruct's filter (Wang et al. 2023, generate_instances.py): tasks a text-only model cannot do.
SELF_INSTRUCT_BLACKLIST = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot",
    "go to", "video", "audio", "music", "flowchart", "diagram",
]


class BudgetConfig(Section):
    """A hard stop on the teacher answers a data set is built from. Answers read back from the cache are
    free but count, so a rerun of a finished or stopped run buys nothing new and stops at the same place;
    raise the budget to go on."""

    max_calls: NonNegativeInt = 0
    """Teacher answers at most (one per chat, generated now or read from the cache); 0 means no limit.
    Never exceeded."""
    max_tokens: NonNegativeInt = 0
    """Prompt plus completion tokens of those answers at most; 0 means no limit. Checked after each batch,
    so a run may go over by one batch (batch_size answers)."""


class SelfInstructConfig(Section):
    """Self-Instruct (Wang et al. 2023): the teacher proposes tasks from examples drawn from a growing pool."""

    rounds: PositiveInt = 5
    """Rounds of proposals; each round's kept tasks join the pool the next round draws examples from."""
    per_round: PositiveInt = 20
    """Tasks the teacher proposes each round."""
    demonstrations: PositiveInt = 6
    """Example tasks shown in each proposal request (Self-Instruct: 6 written by people, 2 generated)."""
    generated_demonstrations: NonNegativeInt = 2
    """How many of the examples may come from generated tasks once there are some."""
    min_words: PositiveInt = 3
    """Proposed instructions (with their input) of fewer words are dropped."""
    max_words: PositiveInt = 150
    """Proposed instructions (with their input) of more words are dropped."""
    similarity: Fraction = 0.7
    """Drop a proposal whose ROUGE-L with any instruction already in the pool is at or above this."""
    blacklist: list[str] = SELF_INSTRUCT_BLACKLIST
    """Words or phrases (whole words, any case) that mark tasks a text model cannot do."""

    @model_validator(mode="after")
    def _word_bounds(self) -> SelfInstructConfig:
        if self.max_words < self.min_words:
            raise error_at(("max_words",), f"must be at least min_words ({self.min_words}), got {self.max_words}")
        return self


class ConstraintsConfig(Section):
    """Verifier-filtered constraint data: prompts with 1-3 verifiable constraints, answers kept only if they pass."""

    registry: Literal["ifeval", "spec"] = "ifeval"
    """Checkers to draw from: 'ifeval', the 25 IFEval instruction types; 'spec', the spec's constraint ids."""
    kinds: list[str] = []
    """Only these constraint ids (e.g. ['punctuation:no_comma']); empty means every id of the registry."""
    min_constraints: PositiveInt = 1
    """Fewest constraints attached to a prompt."""
    max_constraints: PositiveInt = 3
    """Most constraints attached to a prompt (contradictory pairs, like lowercase with uppercase, are never drawn)."""
    samples: PositiveInt = 4
    """Teacher answers sampled per prompt; the first that passes every constraint (strict checker) is kept."""
    variants: PositiveInt = 1
    """Constraint sets drawn per prompt: each prompt is used this many times with different constraints."""

    @model_validator(mode="after")
    def _known_kinds(self) -> ConstraintsConfig:
        from adhere.synth.catalog import registry

        known = registry(self.registry)
        for i, kind in enumerate(self.kinds):
            if kind not in known:
                # 'punctuation:no_comma' in the spec registry is 'no_comma': compare the part after the colon too.
                close = difflib.get_close_matches(kind, known, n=1) or difflib.get_close_matches(
                    kind.rpartition(":")[2], [k.rpartition(":")[2] for k in known], n=1)
                close = [k for k in known if k.endswith(close[0])][:1] if close else []
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise error_at(("kinds", i), f"no constraint {kind!r} in registry {self.registry!r}; {hint}"
                               f"known: {', '.join(known)}")
        if self.max_constraints < self.min_constraints:
            raise error_at(("max_constraints",), f"must be at least min_constraints ({self.min_constraints}), "
                           f"got {self.max_constraints}")
        return self


class RewriteConfig(Section):
    """Rewrite mode: the teacher rewrites existing reference responses into the spec's format."""

    samples: PositiveInt = 2
    """Rewrites sampled per record; the first that passes the spec's checks is kept."""


class SynthDecontamConfig(Section):
    """Generated prompts must not overlap evaluation prompts, so a later score measures generalization."""

    ifeval: bool = True
    """Check against the 541 IFEval prompts shipped with adhere."""
    targets: list[str] = []
    """More benchmark files (JSONL with 'prompt', 'instruction' or 'messages'), relative to adhere.yaml."""
    ngram: PositiveInt = 13
    """Words per shared sequence that count as overlap (13 as lm-evaluation-harness)."""

    @field_validator("targets")
    @classmethod
    def _absolute(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [resolve_path(v, info) for v in value]


class SynthConfig(Section):
    """Synthetic instruction data from a teacher model; `adhere synth` writes canonical records for data.sources."""

    mode: Literal["self_instruct", "constraints", "rewrite"] = "constraints"
    """'self_instruct': new tasks from seed tasks; 'constraints': seed prompts with verifiable constraints;
    'rewrite': reference responses of seed records rewritten into the spec's format."""
    teacher: ModelRef = ModelRef(name="base", kind="base")
    """The model that writes: 'base' (model.base), {name, kind: folder, path} or {name, kind: endpoint, endpoint}."""
    seed_file: str
    """Seed tasks or prompts: JSONL/JSON/CSV rows with 'instruction' (and 'input', 'output'), 'prompt', or
    'messages'; or a .txt file with one prompt per line. Relative to adhere.yaml."""
    target: PositiveInt = 200
    """Records to write at most; generation stops once this many are kept."""
    max_new_tokens: PositiveInt = 512
    """Longest teacher answer; an answer cut at this length is dropped as truncated."""
    temperature: NonNegativeFloat = 0.7
    """Sampling temperature; above 0 so that repeated samples differ."""
    top_p: Fraction = 0.95
    """Nucleus sampling mass."""
    batch_size: PositiveInt = 8
    """Chats sent to the teacher at once (a local model's batch); the budget is checked between batches."""
    seed: int = 0
    """Seed for every random choice and for sampling, so a rerun asks the same questions (and hits the cache)."""
    budget: BudgetConfig = BudgetConfig()
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    constraints: ConstraintsConfig = ConstraintsConfig()
    rewrite: RewriteConfig = RewriteConfig()
    decontam: SynthDecontamConfig = SynthDecontamConfig()

    @field_validator("seed_file")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)

    @field_validator("teacher")
    @classmethod
    def _not_tuned(cls, value: ModelRef) -> ModelRef:
        if value.kind in ("tuned", "sft"):
            raise error_at(("kind",), "the teacher cannot be the tuned model, which is trained on this data; "
                           "use 'base', a folder (e.g. an exported model) or an endpoint")
        return value
