"""The review checklist: twelve rules, each with a stable id, a phrase for summaries, the ruff
codes that cross-check it, and the terse message a reference gives for it.

The generator plants findings of these rules in Python snippets; `generate.py` then runs ruff
with `RUFF_CODES` and keeps a snippet only when ruff sees exactly the planted findings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One checklist rule."""

    id: str
    phrase: str
    """How a summary names it: '2 issues: unused import, bare except.'"""
    codes: tuple[str, ...]
    """ruff codes that report it (the cross-check)."""
    meaning: str
    """What it means, for the README and the spec."""


RULES = (
    Rule("unused-import", "unused import", ("F401",), "a module or name is imported and never used"),
    Rule("wildcard-import", "wildcard import", ("F403",), "`from module import *`"),
    Rule("bare-except", "bare except", ("E722",), "`except:` with no exception class"),
    Rule("mutable-default", "mutable default", ("B006",), "a list or dict literal as a default argument"),
    Rule("none-comparison", "None compared with ==", ("E711",), "`== None` or `!= None` instead of `is`"),
    Rule("type-comparison", "type compared with ==", ("E721",), "`type(x) == T` instead of `isinstance(x, T)`"),
    Rule("builtin-shadowing", "shadowed builtin", ("A001", "A002"), "a variable or argument named like a builtin"),
    Rule("missing-docstring", "missing docstring", ("D103",), "a public module-level function has no docstring"),
    Rule("print-call", "print call", ("T201",), "a `print` left in the code"),
    Rule("non-snake-case", "non-snake-case name", ("N802", "N803", "N806"),
         "a function, argument or local variable name that is not snake_case"),
    Rule("unused-variable", "unused variable", ("F841",), "a local variable is assigned and never read"),
    Rule("open-without-with", "open without with", ("SIM115",), "`open()` outside a `with` block"),
)
RULE_IDS = tuple(r.id for r in RULES)
BY_ID = {r.id: r for r in RULES}
RUFF_CODES = {code: r.id for r in RULES for code in r.codes}

NAME = r"[A-Za-z_]\w*"
BUILTINS = frozenset((
    "list", "dict", "set", "str", "id", "type", "input", "sum", "max", "min", "format", "hash", "filter", "next",
    "iter", "object", "dir", "range", "vars", "all", "any", "len", "map", "zip", "open", "bytes", "tuple",
))


def _first(pattern: str, text: str, group: int = 1) -> str:
    match = re.search(pattern, text)
    return match.group(group) if match else "?"


def _unused_import(text: str) -> str:
    return f"Remove unused import `{_first(rf'import ({NAME})', text)}`."


def _builtin(text: str) -> str:
    names = [n for n in re.findall(NAME, text) if n in BUILTINS and not re.search(rf"\b{n}\(", text)]
    return f"`{names[0] if names else '?'}` shadows a builtin; rename it."


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _non_snake(text: str) -> str:
    name = _first(r"\b([a-z]+[A-Z]\w*)", text)
    return f"Rename `{name}` to `{_snake(name)}`."


def _unused_variable(text: str) -> str:
    name = _first(rf"^\s*({NAME}) =", text)
    return f"`{name}` is assigned but never used."


def _none(text: str) -> str:
    subject = _first(r"([\w.]+(?:\([^()]*\)|\[[^\]]*\])?) [=!]= None", text)
    test = "is not None" if "!= None" in text else "is None"
    return f"Use `{test}` to test `{subject}`."


def _wildcard(text: str) -> str:
    module = _first(r"from ([\w.]+) import", text)
    return f"Import names from `{module}` explicitly."


def _mutable(text: str) -> str:
    default = _first(rf"({NAME}=(\[\]|\{{\}}))", text)
    return f"Default `{default}` is shared between calls; use None."


def _docstring(text: str) -> str:
    return f"Add a docstring to `{_first(rf'def ({NAME})', text)}`."


def _open(text: str) -> str:
    return f"Use `with open(...)` so `{_first(rf'({NAME}) = open', text)}` is closed."


def _type(text: str) -> str:
    match = re.search(rf"type\(([\w.]+)\) [=!]= ({NAME})", text)
    return f"Use `isinstance({match.group(1)}, {match.group(2)})`." if match else "Use `isinstance()`."


# Each message is built from the finding's line as it reads in the snippet, so it names what is there.
MESSAGES: dict[str, Callable[[str], str]] = {
    "unused-import": _unused_import,
    "wildcard-import": _wildcard,
    "bare-except": lambda t: "Catch a specific exception, not everything.",
    "mutable-default": _mutable,
    "none-comparison": _none,
    "type-comparison": _type,
    "builtin-shadowing": _builtin,
    "missing-docstring": _docstring,
    "print-call": lambda t: "Remove the `print` or use logging.",
    "non-snake-case": _non_snake,
    "unused-variable": _unused_variable,
    "open-without-with": _open,
}

# What the finding's line must look like: the tests check every reference's line numbers with these.
LINE_PATTERNS = {
    "unused-import": r"^(import |from \S+ import )",
    "wildcard-import": r"^from \S+ import \*$",
    "bare-except": r"^\s*except:$",
    "mutable-default": r"^\s*def \w+\(.*=(\[\]|\{\})",
    "none-comparison": r"[=!]= None\b",
    "type-comparison": r"\btype\([\w.]+\) [=!]= ",
    "builtin-shadowing": r".",  # checked by name below
    "missing-docstring": r"^def [a-z]\w*\(",
    "print-call": r"^\s+print\(",
    "non-snake-case": r"\b[a-z]+[A-Z]\w*",
    "unused-variable": r"^\s+\w+ = ",
    "open-without-with": r"^\s+\w+ = open\(",
}


def message(rule: str, line_text: str) -> str:
    """The reference message for a finding of `rule` on a line reading `line_text`."""
    return MESSAGES[rule](line_text)


def line_shows(rule: str, line_text: str) -> bool:
    """Whether `line_text` looks like a line where `rule` is found."""
    if rule == "builtin-shadowing":
        return any(name in BUILTINS for name in re.findall(NAME, line_text))
    return re.search(LINE_PATTERNS[rule], line_text) is not None


def summary(shown: list[str], total: int) -> str:
    """'2 issues: unused import, bare except.'; with a limit, '4 issues, first 2 listed: ...'."""
    if total == 0:
        return "No checklist issues found."
    phrases = ", ".join(BY_ID[rule].phrase for rule in shown)
    noun = "issue" if total == 1 else "issues"
    if len(shown) < total:
        return f"{total} {noun}, first {len(shown)} listed: {phrases}."
    return f"{total} {noun}: {phrases}."
