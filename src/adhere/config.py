"""The project config: one `adhere.yaml` describes a whole tuning project.

    adhere config check adhere.yaml --set train.lr=1e-4

Each stage owns its section (`spec`, `data`, `model`, `train`, `eval`,
`serve`, and the optional `synth` and `dpo`); this module puts them together, reads YAML, applies `--set`
overrides, and turns validation errors into one line per problem that names the
file, line and key path: `adhere.yaml:14: train.lora.r: expected a positive
integer, got "sixteen"`.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator, model_validator

from adhere.config_fields import AT, EXPECTED, Section, error_at, resolve_path
from adhere.data.config import DataConfig
from adhere.errors import UserError
from adhere.eval.config import EvalConfig
from adhere.models.config import ModelConfig
from adhere.serve.config import ServeConfig
from adhere.spec.config import SpecConfig
from adhere.synth.config import SynthConfig
from adhere.train.config import DpoConfig, GrpoConfig, TrainConfig

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ProjectConfig(Section):
    """A whole instruction-tuning project: one section per stage."""

    name: str
    """Project name; letters, digits, '.', '_' and '-'."""
    workdir: str = ""
    """Folder for every stage's outputs (relative to adhere.yaml); empty means runs/<name>."""
    spec: SpecConfig = SpecConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    synth: SynthConfig | None = None
    """Synthetic data from a teacher model (`adhere synth`); absent means none is generated."""
    dpo: DpoConfig | None = None
    """Preference tuning after `train` (`adhere dpo`), on workdir/data/pairs.jsonl; absent means none."""
    grpo: GrpoConfig | None = None
    """Reinforcement tuning with the spec's checks as rewards after `train` (and `dpo`) (`adhere grpo`); absent means none."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("expected letters, digits, '.', '_' and '-' only (it names a folder)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_workdir(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and not data.get("workdir") and isinstance(data.get("name"), str):
            data = {**data, "workdir": f"runs/{data['name']}"}
        return data

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _validation_split_for_evaluations(self) -> ProjectConfig:
        if self.data.validation_fraction == 0 and self.train.eval_every is not None:
            raise error_at(("data", "validation_fraction"), "is 0, but train.eval_every is set: evaluations during "
                           "training need a validation split; remove data.validation_fraction (5% is held out then) "
                           "or set it above 0, or remove train.eval_every")
        return self

    @model_validator(mode="after")
    def _self_pairs_item(self) -> ProjectConfig:
        pairs = self.dpo.self_pairs if self.dpo is not None else None
        if pairs is None or pairs.grader != "item_f1":
            return self
        if not self.eval.item_f1:
            raise error_at(("dpo", "self_pairs", "grader"), "is 'item_f1' (the default), but eval.item_f1 is empty: add "
                           "an entry (e.g. suggestion: {list: suggestions, key: [line, rule]}) or set grader: rouge_l")
        if pairs.item and pairs.item not in self.eval.item_f1:
            raise error_at(("dpo", "self_pairs", "item"), f"no eval.item_f1 entry {pairs.item!r}; known: "
                           f"{', '.join(self.eval.item_f1)}")
        return self

    @model_validator(mode="after")
    def _grpo_rewards_the_project_can_score(self) -> ProjectConfig:
        if self.grpo is not None:
            from adhere.train.rewards import project_errors

            project_errors(self)
        return self

    def stage_dir(self, stage: str) -> Path:
        """`workdir/<stage>/`, where that stage writes its outputs."""
        return Path(self.workdir) / stage

    def to_yaml(self) -> str:
        """The resolved config, every default filled in, as YAML that loads back to the same object."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)


# ---------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `2e-4` is a string; learning rates are written that way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML text into data plus its node tree (for line numbers)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    return data, node


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest node of `loc` that exists in the YAML."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def set_override(data: dict[str, Any], assignment: str) -> tuple[Any, ...]:
    """Apply one `--set key.path=value` to raw config data; returns the key path.

    The value is parsed as YAML, so `2e-4` is a float, `[a, b]` a list and
    `null` removes a setting. `spec.constraints[0].n=5` indexes into lists.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects KEY=VALUE (for example train.lr=2e-4), got {assignment!r}")
    value, _ = parse_yaml(raw, f"--set {key}")
    path = _key_path(key.strip())
    target: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(part, int):
            if not isinstance(target, list) or part >= len(target):
                raise UserError(f"--set {key}: {_dotted(path[:i])} has no item {part}")
            target = target[part]
            continue
        if not isinstance(target, dict):
            raise UserError(f"--set {key}: {_dotted(path[:i])} is not a mapping")
        if not isinstance(target.get(part), (dict, list)):
            target[part] = [] if isinstance(nxt, int) else {}
        target = target[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(target, list) or last >= len(target):
            raise UserError(f"--set {key}: {_dotted(path[:-1])} has no item {last}")
        target[last] = value
    elif not isinstance(target, dict):
        raise UserError(f"--set {key}: {_dotted(path[:-1])} is not a mapping")
    elif value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return tuple(path)


def _key_path(key: str) -> list[Any]:
    """`spec.constraints[0].n` (or `spec.constraints.0.n`) -> ['spec', 'constraints', 0, 'n']."""
    path: list[Any] = []
    for part in key.split("."):
        match = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if not match or not (match.group(1) or match.group(2)):
            raise UserError(f"--set {key}: cannot read key path {part!r}; write it like train.lora.r or spec.constraints[0].n")
        name = match.group(1)
        path += [int(name)] if name.isdigit() else ([name] if name else [])
        path += [int(i) for i in re.findall(r"\d+", match.group(2))]
    return path


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ProjectConfig:
    """Read, override and validate `adhere.yaml`; raise UserError naming the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file; `adhere init NAME` creates a project folder NAME/ with one "
                        "(and sample data that `adhere run NAME/adhere.yaml` takes through every stage)")
    data, node = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections (name, workdir, spec, data, ...), got {type(data).__name__}")
    overridden = [set_override(data, item) for item in overrides]
    return validate_config(data, base_dir=path.resolve().parent, source=str(path), node=node, overridden=overridden)


def validate_config(
    data: dict[str, Any],
    *,
    base_dir: Path,
    source: str = "config",
    node: yaml.Node | None = None,
    overridden: list[tuple[Any, ...]] | None = None,
) -> ProjectConfig:
    """Validate raw config data; relative paths are taken from `base_dir`."""
    try:
        return ProjectConfig.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as err:
        lines = []
        for error in _dedupe(err.errors()):
            loc = error_loc(error)
            where = f"{source}:{line}" if (line := _line_of(node, loc)) else source
            if any(loc[: len(o)] == o for o in overridden or []):
                where = f"{where} (--set)"
            lines.append(f"{where}: {_dotted(loc) or '(top level)'}: {describe_error(error)}")
        raise UserError("\n".join(lines)) from None


# ---------------------------------------------------------------- error messages

_EXPECTED = {
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list",
    "none_required": "expected null",
}


def error_loc(error: dict[str, Any]) -> tuple[Any, ...]:
    """The key path of a pydantic error, including paths added by `error_at`."""
    loc = tuple(error["loc"])
    if error["type"] == AT:
        loc += tuple(error["ctx"]["path"])
    # Union members show up as loc parts like 'list[str]'; they are not keys.
    return tuple(p for p in loc if isinstance(p, int) or not re.search(r"[\[\]'\"]", p))


def _dedupe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for error in errors:
        loc = error_loc(error)
        if loc not in seen:
            seen.add(loc)
            out.append(error)
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as 'expected X, got Y' (or the validator's own message)."""
    kind, value = error["type"], error.get("input")
    if kind == AT:
        return error["ctx"]["message"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"])
    if kind == "literal_error":
        return f"expected {error['ctx']['expected']}, got {_show(value)}"
    if kind == EXPECTED:
        return f"{error['msg']}, got {_show(value)}"
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {_show(value)}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{message}, got {_show(value)}"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    known = list(model.model_fields) if model else []
    if model:
        known = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}valid keys here: {', '.join(known)}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config class that validates the mapping at `loc`, for listing its keys."""
    current: Any = ProjectConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of adhere.yaml, for editors (yaml-language-server and the like)."""
    schema = ProjectConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "adhere.yaml"
    return schema

