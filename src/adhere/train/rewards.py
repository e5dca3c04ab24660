"""GRPO's rewards: the spec's own checks and the evaluation's graders, so a user writes no reward code.

    grpo:
      rewards:
        - {name: item_f1, item: suggestion}     # F1 of the answer's findings against the row's reference
        - {name: schema, weight: 0.5}           # 1 when the answer is valid against spec.output.schema
        - {name: length, weight: 0.2}           # 0 up to `target` tokens, down to -1 at grpo.max_new_tokens

Each reward scores one sampled answer (a `Rollout`) in [0, 1] (`length` in [-1, 0]); the answer's reward
is the weighted sum. The names:

- `json`: 1 when the answer parses as JSON.
- `schema`: 1 when it is valid against spec.output.schema.
- `constraints`: the share of spec.constraints it meets.
- `ifeval`: the share of the row's IFEval instructions it follows, strictly (the row's
  meta.instruction_id_list and meta.kwargs, as `adhere synth`'s constraint mode writes them).
- `item_f1` (with `item`, an eval.item_f1 entry), `rouge_l`, `exact_match`: against the row's reference
  answer (its last assistant turn), as `adhere eval` grades.
- `length`: a penalty for long answers (DAPO's soft overlong punishment): 0 up to `target` tokens
  (default three quarters of max_new_tokens), falling linearly to -1 at max_new_tokens.
- `function`: `module:function`, any Python function `f(completion, prompt, reference, meta) -> float`
  (prompt: the chat's turns; reference: the row's answer or None; meta: the row's meta), imported from
  the folder of adhere.yaml or the Python path.
"""

from __future__ import annotations

import difflib
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr, ValidationInfo, field_validator, model_validator

from adhere.config_fields import PositiveInt, Section, error_at
from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

NAMES = ("json", "schema", "constraints", "ifeval", "item_f1", "rouge_l", "exact_match", "length", "function")
REFERENCE_GRADERS = ("item_f1", "rouge_l", "exact_match")


class RewardConfig(Section):
    """One reward of grpo.rewards: a name, its weight in the sum, and the name's own setting."""

    name: str
    """json | schema | constraints | ifeval | item_f1 | rouge_l | exact_match | length | function"""
    weight: float = 1.0
    """Its weight in the answer's reward (the weighted sum of every reward)."""
    item: str = ""
    """item_f1: the eval.item_f1 entry it scores (e.g. 'suggestion'); empty means the first entry."""
    function: str = ""
    """function: 'module:function', imported from adhere.yaml's folder or the Python path."""
    target: PositiveInt | None = None
    """length: answers up to this many tokens get 0; default three quarters of grpo.max_new_tokens."""
    _base_dir: str = PrivateAttr(default=".")

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in NAMES:
            close = difflib.get_close_matches(value, NAMES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown reward {value!r}; {hint}known: {', '.join(NAMES)}")
        return value

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError("expected a finite number other than 0 (remove the reward to turn it off)")
        return value

    @model_validator(mode="after")
    def _settings_of_its_name(self, info: ValidationInfo) -> RewardConfig:
        if self.item and self.name != "item_f1":
            raise error_at(("item",), f"is item_f1's setting; reward {self.name!r} has none")
        if self.target is not None and self.name != "length":
            raise error_at(("target",), f"is length's setting; reward {self.name!r} has none")
        if self.name == "function":
            module, _, function = self.function.partition(":")
            if not module or not function.isidentifier():
                raise error_at(("function",), "expected 'module:function', e.g. 'my_rewards:lowercase'")
        elif self.function:
            raise error_at(("function",), f"is the 'function' reward's setting; reward {self.name!r} has none")
        self._base_dir = str((info.context or {}).get("base_dir", "."))
        return self

    def module_file(self) -> Path | None:
        """The 'function' reward's module when it is a file beside adhere.yaml (the pipeline hashes it), else None."""
        if self.name != "function":
            return None
        path = Path(self._base_dir) / (self.function.partition(":")[0].replace(".", "/") + ".py")
        return path if path.is_file() else None

    @property
    def label(self) -> str:
        """The name its logged mean goes by: reward_<label> in metrics.jsonl."""
        if self.name == "function":
            return self.function.rpartition(":")[2]
        return f"item_f1_{self.item}" if self.item else self.name


@dataclass(frozen=True)
class GrpoPrompt:
    """A training prompt: its turns up to the last user turn, the reference answer after them (if any), its meta."""

    id: str
    messages: list[dict[str, str]]
    reference: str | None
    meta: dict[str, Any]
    input_ids: list[int]  # the rendered prompt, with the generation prompt
    blank: bool = False  # trains nothing: a process's share of a short last batch


@dataclass(frozen=True)
class Rollout:
    """One sampled answer to a prompt."""

    prompt: GrpoPrompt
    text: str
    completion_tokens: int
    finish_reason: str


Reward = Callable[[Rollout], float]


@dataclass(frozen=True)
class Rewards:
    """The configured rewards, resolved against the project: labels, weights and the functions that score."""

    labels: tuple[str, ...]
    weights: tuple[float, ...]
    functions: tuple[Reward, ...]
    settings: tuple[RewardConfig, ...]

    def score(self, rollouts: Sequence[Rollout]) -> list[list[float]]:
        """Each rollout's score under each reward; a user function that fails stops the run with its name."""
        out = []
        for rollout in rollouts:
            row = []
            for setting, function in zip(self.settings, self.functions):
                try:
                    value = float(function(rollout))
                except UserError:
                    raise
                except Exception as exc:  # a user function's own error: name it and the prompt
                    raise UserError(f"grpo.rewards: {setting.function or setting.name} failed on prompt "
                                    f"{rollout.prompt.id}: {type(exc).__name__}: {exc}") from exc
                if not math.isfinite(value):
                    raise UserError(f"grpo.rewards: {setting.function or setting.name} returned {value} on prompt "
                                    f"{rollout.prompt.id}; a reward must be a finite number")
                row.append(value)
            out.append(row)
        return out

    def check_prompts(self, prompts: Sequence[GrpoPrompt], where: str) -> None:
        """A UserError when a reward needs what some prompts lack (a reference, IFEval instructions), with counts."""
        for setting in self.settings:
            if setting.name in REFERENCE_GRADERS:
                missing = [p.id for p in prompts if p.reference is None]
                need = "a reference answer (an assistant turn after the last user turn)"
            elif setting.name == "ifeval":
                missing = [p.id for p in prompts if not p.meta.get("instruction_id_list")]
                need = "IFEval instructions (meta.instruction_id_list and meta.kwargs, as adhere synth's constraint mode writes)"
            else:
                continue
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise UserError(f"grpo.rewards: {setting.name} needs {need}, and {len(missing)} of {len(prompts)} "
                                f"prompts in {where} have none ({shown}); remove that reward or those rows")


def build(config: ProjectConfig) -> Rewards:
    """grpo.rewards resolved: each name bound to the spec, the eval's graders or the user's function."""
    assert config.grpo is not None
    settings = tuple(config.grpo.rewards)
    functions = tuple(_reward(setting, config) for setting in settings)
    return Rewards(tuple(s.label for s in settings), tuple(s.weight for s in settings), functions, settings)


def _reward(setting: RewardConfig, config: ProjectConfig) -> Reward:
    from adhere.eval import metrics
    from adhere.spec.constraints import json_schema, json_valid

    spec, name = config.spec, setting.name
    if name == "json":
        return lambda r: float(json_valid(r.text))
    if name == "schema":
        schema = spec.output.schema_
        assert schema is not None  # checked by ProjectConfig
        return lambda r: float(json_schema(r.text, schema=schema))
    if name == "constraints":
        constraints = list(spec.constraints)
        return lambda r: sum(c.check(r.text) for c in constraints) / len(constraints)
    if name == "ifeval":
        return _ifeval
    if name == "item_f1":
        entry = config.eval.item_f1[setting.item or next(iter(config.eval.item_f1))]
        path, key = entry.list, tuple(entry.key)
        return lambda r: metrics.item_f1(r.text, r.prompt.reference or "", path=path, key=key)
    if name == "rouge_l":
        return lambda r: metrics.rouge_l(r.text, r.prompt.reference or "")
    if name == "exact_match":
        return lambda r: float(metrics.exact_match(r.text, r.prompt.reference or ""))
    if name == "length":
        limit = config.grpo.max_new_tokens if config.grpo is not None else 1
        target = setting.target or max(1, limit * 3 // 4)
        span = max(1, limit - target)
        return lambda r: -min(1.0, max(0, r.completion_tokens - target) / span)
    return _user_function(setting)


def _ifeval(rollout: Rollout) -> float:
    """The share of the row's IFEval instructions the answer follows strictly, as `adhere eval` scores them."""
    from adhere.eval.ifeval.suite import IfevalPrompt, score_response

    meta = rollout.prompt.meta
    ids, kwargs = tuple(meta["instruction_id_list"]), tuple(meta.get("kwargs") or [{}] * len(meta["instruction_id_list"]))
    prompt = IfevalPrompt(key=0, prompt=rollout.prompt.messages[-1]["content"], instruction_id_list=ids,
                          kwargs=tuple({k: v for k, v in kw.items() if v is not None} for kw in kwargs))
    verdict = score_response(prompt, rollout.text)
    return sum(verdict.strict) / len(verdict.strict)


def _user_function(setting: RewardConfig) -> Reward:
    """The user's `module:function`, imported now so a typo fails before any training."""
    module_name, _, function_name = setting.function.partition(":")
    if setting._base_dir not in sys.path:
        sys.path.insert(0, setting._base_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"grpo.rewards: cannot import {module_name!r} for {setting.function!r} ({exc}); put "
                        f"{module_name}.py beside adhere.yaml ({setting._base_dir}) or on the Python path") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(f"grpo.rewards: {module.__name__} ({getattr(module, '__file__', '?')}) has no function "
                        f"{function_name!r}")
    return lambda r: function(completion=r.text, prompt=r.prompt.messages, reference=r.prompt.reference,
                              meta=r.prompt.meta)


def project_errors(config: ProjectConfig) -> None:
    """Raise error_at for a reward the project cannot score (no schema, no constraints, no eval.item_f1 entry)."""
    assert config.grpo is not None
    spec, entries = config.spec, config.eval.item_f1
    for i, setting in enumerate(config.grpo.rewards):
        at = ("grpo", "rewards", i, "name")
        if setting.name == "schema" and spec.output.schema_ is None:
            raise error_at(at, "is 'schema', but spec.output.schema is empty: add a JSON Schema there or use 'json'")
        if setting.name == "constraints" and not spec.constraints:
            raise error_at(at, "is 'constraints', but spec.constraints is empty: add some, or remove this reward")
        if setting.name == "item_f1" and not entries:
            raise error_at(at, "is 'item_f1', but eval.item_f1 is empty: add an entry (e.g. suggestion: {list: "
                           "suggestions, key: [line, rule]}) or use rouge_l")
        if setting.name == "item_f1" and setting.item and setting.item not in entries:
            raise error_at(("grpo", "rewards", i, "item"), f"no eval.item_f1 entry {setting.item!r}; known: {', '.join(entries)}")
