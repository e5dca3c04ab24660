"""Code templates rendered into snippets with planted review findings.

A template is clean Python text with `$name` placeholders (each filled with one of its
`vocab` choices) and optional slot lines written `?rule:<code line>`, which appear only when
that rule is planted there. Every other rule is planted by a generic mutator that finds a
site in the rendered code: `with open(...) as f:` becomes `f = open(...)` ... `f.close()`,
`x is None` becomes `x == None`, a docstring is removed, and so on. Each planted line
carries its rule, so the reference's line numbers come from the lines themselves.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from string import Template as Text

from checklist import BUILTINS, NAME, RULE_IDS


@dataclass(frozen=True)
class Template:
    """A clean code template; `kind` is what the code does (data loading, HTTP handler, CLI...)."""

    id: str
    kind: str
    text: str
    vocab: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Line:
    """One line of a snippet; `rule` is the finding planted on it, if any."""

    text: str
    rule: str | None = None


SLOT = re.compile(r"^\?([a-z-]+):(.*)$")
# How many findings a snippet gets: mostly 1-3, some clean ones, so the model learns to say "none".
FINDING_COUNTS = (0, 1, 1, 2, 2, 2, 3, 3, 4)


def render(template: Template, rng: random.Random) -> tuple[list[Line], dict[str, list[Line]]]:
    """The template with every placeholder filled; slot lines are returned apart, by rule."""
    values = {name: rng.choice(choices) for name, choices in sorted(template.vocab.items())}
    text = Text(template.text.strip("\n")).substitute(values)
    lines: list[Line] = []
    slots: dict[str, list[Line]] = {}
    for raw in text.splitlines():
        match = SLOT.match(raw)
        line = Line(match.group(2) if match else raw.rstrip())
        if match:
            slots.setdefault(match.group(1), []).append(line)
        lines.append(line)
    return lines, slots


def plant(template: Template, rng: random.Random, weights: dict[str, float]) -> list[Line]:
    """A rendered snippet with up to 4 planted findings, rules drawn in proportion to `weights`."""
    lines, slots = render(template, rng)
    wanted = rng.choice(FINDING_COUNTS)
    order = _weighted_order(rng, weights)
    in_slots = [r for r in order[:wanted] if r in slots]
    for rule, candidates in slots.items():
        chosen = rng.choice(candidates) if rule in in_slots else None
        for line in candidates:
            if line is chosen:
                line.rule = rule
            else:
                lines.remove(line)
    planted = len(in_slots)
    for rule in order:
        if planted >= wanted:
            break
        if rule not in in_slots and MUTATORS[rule](lines, rng):
            planted += 1
    return lines


def _weighted_order(rng: random.Random, weights: dict[str, float]) -> list[str]:
    # Efraimidis-Spirakis: sort by u^(1/w), a weighted shuffle without replacement.
    return sorted(RULE_IDS, key=lambda r: -(rng.random() ** (1.0 / weights[r])))


# ------------------------------------------------------------------ structure helpers


def indent(text: str) -> int:
    """Leading spaces."""
    return len(text) - len(text.lstrip(" "))


def functions(lines: list[Line]) -> list[tuple[int, int]]:
    """(def index, end index) of every function, methods included; end is exclusive."""
    out = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*def ", line.text):
            depth, end = indent(line.text), i + 1
            for j in range(i + 1, len(lines)):
                if lines[j].text.strip() and indent(lines[j].text) <= depth:
                    break
                if lines[j].text.strip():
                    end = j + 1
            out.append((i, end))
    return out


def code(lines: list[Line]) -> str:
    """The snippet's text."""
    return "\n".join(line.text for line in lines)


def _balanced(text: str) -> bool:
    return all(text.count(a) == text.count(b) for a, b in ("()", "[]", "{}")) and not text.endswith((",", "\\", ":"))


def _rename(lines: list[Line], start: int, end: int, old: str, new: str) -> None:
    """Rename a variable in lines[start:end]: not attributes (`.old`) or keyword arguments (`old=`)."""
    anywhere = re.compile(rf"(?<![\w.\"']){old}\b(?![\"'])")
    not_keyword = re.compile(rf"(?<![\w.\"']){old}\b(?![\"']|=[^=])")
    for k in range(start, end):
        lines[k].text = (anywhere if k == start else not_keyword).sub(new, lines[k].text)


def _bindings(lines: list[Line], start: int, end: int) -> dict[str, list[int]]:
    """Lines that bind each local name of a function: `x = ...`, `for x in`, `with ... as x:`."""
    found: dict[str, list[int]] = {}
    for k in range(start + 1, end):
        text = lines[k].text
        for name in re.findall(rf"^\s+({NAME}) (?:[-+*/]?=) |^\s+for ({NAME}) in |\bas ({NAME}):$", text):
            found.setdefault(next(n for n in name if n), []).append(k)
    return found


def _params(lines: list[Line], start: int) -> list[str]:
    """The parameter names of the function defined at lines[start]."""
    header = re.match(r"^\s*def \w+\((.*)\):", lines[start].text)
    return re.findall(rf"({NAME})(?:: [^,=]+)?(?:=[^,)]*)?(?:,|$)", header.group(1)) if header else []


def _assigned(lines: list[Line], start: int, end: int, name: str) -> bool:
    """Whether `name` is on the left of an assignment in the body (tuples included)."""
    for k in range(start + 1, end):
        target = re.match(r"^\s*([^=]+?)\s*[-+*/]?=(?!=)", lines[k].text)
        if target and re.search(rf"(?<![\w.]){name}\b", target.group(1)):
            return True
    return False


def _locals(lines: list[Line], start: int, end: int) -> dict[str, int]:
    """Local names bound exactly once, on an untagged line, that are not parameters: name -> line."""
    params = _params(lines, start)
    return {n: w[0] for n, w in _bindings(lines, start, end).items()
            if len(w) == 1 and n not in params and _free(lines, w[0])}


def _free(lines: list[Line], index: int) -> bool:
    return lines[index].rule is None


# ------------------------------------------------------------------ mutators, one per rule


IMPORTS = (
    ("import os", "os"), ("import re", "re"), ("import sys", "sys"), ("import json", "json"), ("import math", "math"),
    ("import time", "time"), ("import shutil", "shutil"), ("import random", "random"), ("import logging", "logging"),
    ("import itertools", "itertools"), ("import subprocess", "subprocess"), ("from typing import Any", "Any"),
    ("from collections import defaultdict", "defaultdict"), ("from pathlib import Path", "Path"),
    ("from datetime import datetime", "datetime"), ("import functools", "functools"), ("import csv", "csv"),
)


def unused_import(lines: list[Line], rng: random.Random) -> bool:
    """An import nothing uses, placed among the imports."""
    text = code(lines)
    options = [(s, n) for s, n in IMPORTS
               if not re.search(rf"\b{n}\b", text) and not re.search(rf"^(import|from) {s.split()[1]}\b", text, re.MULTILINE)]
    if not options:
        return False
    statement, _ = rng.choice(options)
    block = 0
    while block < len(lines) and lines[block].text.startswith(("import ", "from ")):
        block += 1
    if block == 0:
        lines[0:0] = [Line(statement, "unused-import"), Line("")]
    else:
        lines.insert(rng.randint(0, block), Line(statement, "unused-import"))
    return True


def wildcard_import(lines: list[Line], rng: random.Random) -> bool:
    """`from m import a, b` becomes `from m import *`."""
    sites = [i for i, line in enumerate(lines) if _free(lines, i) and re.match(r"^from [\w.]+ import [\w, ]+$", line.text)]
    if not sites:
        return False
    i = rng.choice(sites)
    lines[i].text = re.sub(r"import .*$", "import *", lines[i].text)
    lines[i].rule = "wildcard-import"
    return True


def _replace_on(lines: list[Line], rng: random.Random, rule: str, pattern: str, replace: Callable) -> bool:
    sites = [i for i, line in enumerate(lines) if _free(lines, i) and re.search(pattern, line.text)]
    if not sites:
        return False
    i = rng.choice(sites)
    lines[i].text = re.sub(pattern, replace, lines[i].text, count=1)
    lines[i].rule = rule
    return True


def bare_except(lines: list[Line], rng: random.Random) -> bool:
    """`except ValueError:` becomes `except:`."""
    return _replace_on(lines, rng, "bare-except", r"^(\s*)except (?!.* as )[\w.(), ]+:$", lambda m: f"{m.group(1)}except:")


def none_comparison(lines: list[Line], rng: random.Random) -> bool:
    """`x is None` becomes `x == None`."""
    return _replace_on(lines, rng, "none-comparison", r" is (not )?None\b", lambda m: " != None" if m.group(1) else " == None")


def type_comparison(lines: list[Line], rng: random.Random) -> bool:
    """`isinstance(x, dict)` becomes `type(x) == dict`."""
    pattern = r"(not )?isinstance\(([\w.]+), (\w+)\)"
    return _replace_on(lines, rng, "type-comparison", pattern,
                       lambda m: f"type({m.group(2)}) {'!=' if m.group(1) else '=='} {m.group(3)}")


def missing_docstring(lines: list[Line], rng: random.Random) -> bool:
    """The docstring of a public module-level function is removed."""
    sites = [i for i, _ in functions(lines) if re.match(r"^def [a-z]", lines[i].text) and _free(lines, i)
             and i + 2 < len(lines) and re.match(r'^\s+""".*"""$', lines[i + 1].text) and lines[i + 2].text.strip()]
    if not sites:
        return False
    i = rng.choice(sites)
    del lines[i + 1]
    lines[i].rule = "missing-docstring"
    return True


def print_call(lines: list[Line], rng: random.Random) -> bool:
    """A debug print after an assignment inside a function."""
    sites = []
    for start, end in functions(lines):
        for k in range(start + 1, end):
            match = re.match(rf"^(\s+)({NAME}) = (.+)$", lines[k].text)
            if match and _free(lines, k) and _balanced(match.group(3)) and not re.search(r"\b(print|lambda)\b", lines[k].text):
                sites.append((k, match.group(1), match.group(2)))
    if not sites:
        return False
    k, space, name = rng.choice(sites)
    call = rng.choice((f"print({name})", f'print("{name}:", {name})', f'print(f"{name}={{{name}!r}}")',
                       f'print("DEBUG", {name})'))
    lines.insert(k + 1, Line(f"{space}{call}", "print-call"))
    return True


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def non_snake_case(lines: list[Line], rng: random.Random) -> bool:
    """A function or a once-bound local variable gets a camelCase name."""
    text, sites = code(lines), []
    for start, end in functions(lines):
        fn = re.match(rf"^def ([a-z]+_{NAME})\(", lines[start].text)
        if fn and _free(lines, start):
            sites.append((0, len(lines), start, fn.group(1)))
        for name, at in _locals(lines, start, end).items():
            if "_" in name.strip("_") and not name.startswith("_"):
                sites.append((start, end, at, name))
    sites = [s for s in sites if not re.search(rf"\b{_camel(s[3])}\b", text)]
    if not sites:
        return False
    start, end, at, name = rng.choice(sites)
    _rename(lines, start, end, name, _camel(name))
    lines[at].rule = "non-snake-case"
    return True


# What a name would be called by someone reaching for the nearest builtin.
SHADOWS = {
    "user_id": "id", "item_id": "id", "record_id": "id", "order_id": "id", "job_id": "id", "key": "id",
    "kind": "type", "category": "type", "event_type": "type", "total": "sum", "largest": "max", "limit": "max",
    "smallest": "min", "lowest": "min", "raw": "input", "answer": "input", "items": "list", "values": "list",
    "names": "list", "entries": "list", "results": "list", "mapping": "dict", "lookup": "dict", "counts": "dict",
    "options": "dict", "fmt": "format", "pattern": "format", "digest": "hash", "checksum": "hash",
    "predicate": "filter", "directory": "dir", "folder": "dir", "obj": "object", "following": "next",
}


def builtin_shadowing(lines: list[Line], rng: random.Random) -> bool:
    """An argument or a once-bound local variable is renamed to a builtin (`user_id` -> `id`)."""
    sites = []
    for start, end in functions(lines):
        body = "\n".join(line.text for line in lines[start:end])
        names = {n: start for n in _params(lines, start) if not _assigned(lines, start, end, n)}
        names.update(_locals(lines, start, end))
        for name, at in names.items():
            new = SHADOWS.get(name)
            if new and _free(lines, at) and not re.search(rf"\b{new}\b", body):
                sites.append((start, end, at, name, new))
    if not sites:
        return False
    start, end, at, name, new = rng.choice(sites)
    _rename(lines, start, end, name, new)
    lines[at].rule = "builtin-shadowing"
    return True


# Methods whose result is worth a name; assigning it and never reading it is the finding.
RESULT_NAMES = {"write": ("written", "count"), "execute": ("cursor", "result"), "pop": ("removed", "value"),
                "send": ("sent",), "run": ("completed",), "post": ("response",),
                "readline": ("header",)}


def unused_variable(lines: list[Line], rng: random.Random) -> bool:
    """A call statement whose result is assigned and never used (`written = out.write(text)`)."""
    text, sites = code(lines), []
    for start, end in functions(lines):
        for k in range(start + 1, end):
            # The named method's call must be the whole statement: not `a.pop(k).strip()`.
            match = re.match(rf"^(\s+)[\w.\[\]]+\.({'|'.join(RESULT_NAMES)})\((?!.*\)\.\w+\().*\)$", lines[k].text)
            names = [n for n in RESULT_NAMES[match.group(2)] if not re.search(rf"\b{n}\b", text)] if match else []
            if names and _free(lines, k):
                sites.append((k, match.group(1), names[0]))
    if not sites:
        return False
    k, space, name = rng.choice(sites)
    lines[k].text = f"{space}{name} = {lines[k].text.strip()}"
    lines[k].rule = "unused-variable"
    return True


def open_without_with(lines: list[Line], rng: random.Random) -> bool:
    """`with open(p) as f:` + block becomes `f = open(p)`, the block dedented, then `f.close()`."""
    sites = []
    for i, line in enumerate(lines):
        match = re.match(rf"^(\s+)with (open\(.*\)) as ({NAME}):$", line.text)
        if match and _free(lines, i):
            depth, end = indent(line.text), i + 1
            while end < len(lines) and (not lines[end].text.strip() or indent(lines[end].text) > depth):
                end += 1
            while not lines[end - 1].text.strip():
                end -= 1
            body = [b.text for b in lines[i + 1 : end]]
            if not any(re.match(r"^\s*(return|yield)\b", b) for b in body):
                sites.append((i, end, match))
    if not sites:
        return False
    i, end, match = rng.choice(sites)
    space, call, handle = match.groups()
    for line in lines[i + 1 : end]:
        line.text = line.text[4:] if line.text.strip() else line.text
    lines[i].text, lines[i].rule = f"{space}{handle} = {call}", "open-without-with"
    lines.insert(end, Line(f"{space}{handle}.close()"))
    return True


def mutable_default(lines: list[Line], rng: random.Random) -> bool:
    """`def f(tags=None)` + `if tags is None: tags = []` becomes `def f(tags=[])`."""
    sites = []
    for start, end in functions(lines):
        for k in range(start + 1, end - 1):
            check = re.match(rf"^\s+if ({NAME}) is None:$", lines[k].text)
            if check and _free(lines, start) and _free(lines, k) and f"{check.group(1)}=None" in lines[start].text:
                default = re.match(rf"^\s+{check.group(1)} = (\[\]|\{{\}})$", lines[k + 1].text)
                # The `if` block must be that one line: a print planted inside it would be left dangling.
                alone = k + 2 >= len(lines) or indent(lines[k + 2].text) <= indent(lines[k].text)
                if default and alone:
                    sites.append((start, k, check.group(1), default.group(1)))
    if not sites:
        return False
    start, k, name, default = rng.choice(sites)
    lines[start].text = lines[start].text.replace(f"{name}=None", f"{name}={default}")
    lines[start].rule = "mutable-default"
    del lines[k : k + 2]
    return True


MUTATORS: dict[str, Callable[[list[Line], random.Random], bool]] = {
    "unused-import": unused_import,
    "wildcard-import": wildcard_import,
    "bare-except": bare_except,
    "mutable-default": mutable_default,
    "none-comparison": none_comparison,
    "type-comparison": type_comparison,
    "builtin-shadowing": builtin_shadowing,
    "missing-docstring": missing_docstring,
    "print-call": print_call,
    "non-snake-case": non_snake_case,
    "unused-variable": unused_variable,
    "open-without-with": open_without_with,
}
assert set(MUTATORS) == set(RULE_IDS) and set(SHADOWS.values()) <= BUILTINS
