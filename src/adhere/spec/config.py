"""The `spec` section of adhere.yaml: what the tuned model must do (step 1).

A spec states the task, the output format, the verifiable constraints every
response must meet, and a rubric for judged evaluation. Later stages reuse it:
data curation checks reference responses against it, evaluation scores against
it, and the server checks live responses against it.
"""

from __future__ import annotations

import difflib
import inspect
import json
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator, model_serializer, model_validator

from adhere.config_fields import Section, error_at, resolve_path

SCORES = (1, 2, 3, 4, 5)


class OutputFormat(Section):
    """The shape of every response."""

    format: Literal["text", "markdown", "json"] = "text"
    """'text', 'markdown', or 'json' (then give `schema`)."""
    # `schema` would shadow a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    """JSON Schema of the response, inline or as a path to a .json file (relative to adhere.yaml)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    @field_validator("schema_", mode="before")
    @classmethod
    def _read_schema_file(cls, value: Any, info: ValidationInfo) -> Any:
        return load_schema_file(value, info)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_json_schema(value, ())
        return value

    @model_validator(mode="after")
    def _schema_needs_json(self) -> OutputFormat:
        if self.schema_ is not None and self.format != "json":
            raise error_at(("format",), f"output.schema is set, so output.format must be 'json', got {self.format!r}")
        return self


def load_schema_file(value: Any, info: ValidationInfo) -> Any:
    """A string schema is a path to a JSON file, relative to the config file's folder."""
    if not isinstance(value, str):
        return value
    path = Path(resolve_path(value, info))
    if not path.is_file():
        raise error_at((), f"schema file {str(path)!r} not found; give a JSON Schema inline or a path to a .json file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error_at((), f"schema file {str(path)!r} is not valid JSON (line {err.lineno}: {err.msg})") from None


def check_json_schema(schema: dict[str, Any], at: tuple[str | int, ...]) -> None:
    """Raise an error at the offending key when `schema` is not a valid JSON Schema."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise error_at(at + tuple(err.absolute_path), f"invalid JSON Schema: {err.message}") from None


class Constraint(Section):
    """One verifiable constraint: an id from the checker registry plus its arguments.

    In YAML the arguments sit beside the id: `{id: max_words, n: 120}`.
    """

    id: str
    args: dict[str, Any] = {}

    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _constraint_json_schema(schema))

    @model_validator(mode="before")
    @classmethod
    def _fold_arguments(cls, data: Any) -> Any:
        if isinstance(data, dict) and "args" not in data:
            return {"id": data.get("id"), "args": {k: v for k, v in data.items() if k != "id"}}
        return data

    @field_validator("id")
    @classmethod
    def _known_id(cls, value: str) -> str:
        from adhere.spec.constraints import CHECKERS

        if value not in CHECKERS:
            close = difflib.get_close_matches(value, CHECKERS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise error_at((), f"unknown constraint {value!r}; {hint}known: {', '.join(sorted(CHECKERS))}")
        return value

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"id": self.id, **self.args}

    @property
    def label(self) -> str:
        """A short name for reports: `max_words(n=120)`; schemas and default arguments are left out."""
        fields = arguments_model(self.id).model_fields
        defaults = {f.alias or name: f.default for name, f in fields.items()}
        shown = {k: v for k, v in self.args.items() if k != "schema" and v != defaults.get(k)}
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{self.id}({inner})" if inner else self.id

    def check(self, response: str) -> bool:
        """Whether `response` meets this constraint."""
        from adhere.spec.constraints import check

        return check(self.id, response, **self.args)


@cache
def arguments_model(constraint_id: str) -> type[Section]:
    """A config model of a checker's keyword arguments, built from its signature."""
    from adhere.spec.constraints import CHECKERS

    fn = CHECKERS[constraint_id]
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            default = ... if param.default is inspect.Parameter.empty else param.default
            # An argument named like a BaseModel attribute (`schema`) gets a field name with an alias.
            field_name = f"{name}_" if hasattr(BaseModel, name) else name
            fields[field_name] = (hints[name], Field(default, alias=name))
    return create_model(f"{constraint_id}_arguments", __base__=Section, **fields)


def _constraint_json_schema(schema: dict[str, Any]) -> None:
    """In the JSON Schema, a constraint is one of the registry's ids with exactly its arguments."""
    from adhere.spec.constraints import CHECKERS, describe

    variants = []
    for constraint_id in sorted(CHECKERS):
        args = arguments_model(constraint_id).model_json_schema()
        # json_schema's `schema` may come from spec.output.schema instead.
        required = [r for r in args.get("required", []) if not (constraint_id == "json_schema" and r == "schema")]
        variants.append(
            {
                "type": "object",
                "description": describe(constraint_id),
                "properties": {"id": {"const": constraint_id}, **args.get("properties", {})},
                "required": ["id", *required],
                "additionalProperties": False,
            }
        )
    schema.clear()
    schema.update({"title": "Constraint", "oneOf": variants})


class Criterion(Section):
    """One rubric criterion, scored 1 to 5 by a judge."""

    name: str
    description: str
    scores: dict[int, str]
    """What a response earns each score, for every score from 1 to 5."""

    @field_validator("scores")
    @classmethod
    def _all_scores(cls, value: dict[int, str]) -> dict[int, str]:
        missing = [s for s in SCORES if s not in value]
        extra = [s for s in value if s not in SCORES]
        if missing or extra:
            problem = f"missing {missing}" if missing else f"unexpected {extra}"
            raise error_at((), f"expected one description for each score 1-5; {problem}")
        return value


class SpecConfig(Section):
    """What the tuned model must do: the target instructions."""

    task: str = "assistant"
    """A short name for the task, e.g. 'code_review'."""
    description: str = ""
    """What the model is for, in a sentence or two; shown to judges and in reports."""
    system_prompt: str | None = None
    """A system message put before every conversation, in training, evaluation and serving."""
    output: OutputFormat = OutputFormat()
    constraints: list[Constraint] = []
    """Verifiable constraints every response must meet, e.g. `{id: max_words, n: 120}`."""
    rubric: list[Criterion] = []
    """Criteria for judged evaluation."""

    @model_validator(mode="after")
    def _check_constraint_arguments(self) -> SpecConfig:
        for i, constraint in enumerate(self.constraints):
            at: tuple[str | int, ...] = ("constraints", i)
            args = dict(constraint.args)
            if constraint.id == "json_schema" and "schema" not in args:
                if self.output.schema_ is None:
                    raise error_at(at, "json_schema needs a schema: set spec.output.schema, or give `schema` here")
                args["schema"] = self.output.schema_
            model = arguments_model(constraint.id)
            try:
                validated = model.model_validate(args)
            except Exception as err:  # pydantic.ValidationError: re-raise at the key inside this constraint
                first = err.errors()[0]  # type: ignore[attr-defined]
                raise error_at(at + tuple(first["loc"]), _argument_message(first, constraint.id, model)) from None
            if "schema" in args:
                check_json_schema(args["schema"], at + ("schema",))
            constraint.args = validated.model_dump(by_alias=True)
            try:  # arguments of the right type can still be unusable, e.g. a bad regex
                constraint.check("")
            except Exception as exc:
                raise error_at(at, f"{constraint.id} cannot use these arguments: {exc}") from None
        return self


def _argument_message(error: dict[str, Any], constraint_id: str, model: type[Section]) -> str:
    from adhere.config import describe_error

    if error["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        return f"{constraint_id} takes no argument {error['loc'][-1]!r} (its arguments: {known})"
    return describe_error(error)
