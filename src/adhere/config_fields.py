"""Base class and field types shared by every section of the project config.

Each stage owns its section (`adhere/<stage>/config.py`); they all derive from
`Section`, which forbids unknown keys and refuses silent coercion ("16" is not
an int), so a typo in `adhere.yaml` is an error that names its key path rather
than a setting quietly ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError

# The error type whose message `config.describe_error` shows as written, followed by the value given.
EXPECTED = "adhere_expected"


class Section(BaseModel):
    """A block of `adhere.yaml`: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, use_attribute_docstrings=True)


def _number_check(integer: bool, ok: Callable[[float], bool], expected: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
            raise PydanticCustomError(EXPECTED, expected)
        return float(value) if not integer else value

    return BeforeValidator(check)


# The JSON Schema keeps the bounds (for editors); the validators give the messages.
PositiveInt = Annotated[int, Field(gt=0), _number_check(True, lambda v: v > 0, "expected a positive integer")]
NonNegativeInt = Annotated[int, Field(ge=0), _number_check(True, lambda v: v >= 0, "expected an integer >= 0")]
PositiveFloat = Annotated[float, Field(gt=0), _number_check(False, lambda v: v > 0, "expected a positive number")]
NonNegativeFloat = Annotated[float, Field(ge=0), _number_check(False, lambda v: v >= 0, "expected a number >= 0")]
Fraction = Annotated[float, Field(ge=0, le=1), _number_check(False, lambda v: 0 <= v <= 1, "expected a number between 0 and 1")]


# The error type whose context carries extra key-path parts below the field that
# raised it, so a validator on a whole block can still point at one key inside it
# (for example `spec.constraints[0].n` from the constraint's own validator).
AT = "adhere_at"


def error_at(path: tuple[str | int, ...], message: str) -> PydanticCustomError:
    """An error that `config.validate_config` reports at `<field>.<path...>` (the path added by `config.error_loc`)."""
    return PydanticCustomError(AT, "{message}", {"message": message, "path": path})


def resolve_path(value: str, info: ValidationInfo) -> str:
    """A path from adhere.yaml, made absolute against the config file's folder."""
    base = Path((info.context or {}).get("base_dir", "."))
    return str((base / Path(value).expanduser()).resolve())
