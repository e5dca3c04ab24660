"""Code templates for the evaluation split only (none of them is used for training).

Same kinds of code as templates_train.py (data loading, parsing, handlers, classes, utilities,
CLI), different programs, so a model has to review code it has not seen.
"""

from snippets import Template

TEMPLATES = (
    Template("env-loader", "data loading", '''
import os


def read_env_file(path, $environ=None):
    """Load KEY=VALUE lines from a .env file into a dict, then apply overrides."""
    if $environ is None:
        $environ = {}
    $values = {}
    with open(path, encoding="utf-8") as env_file:
        for raw in env_file:
            line = raw.strip()
            if line and not line.startswith("#"):
                $name, _, value = line.partition("=")
                $values[$name.strip()] = value.strip().strip('"')
    $values.update($environ)
    return $values


def env_int(name, default=0):
    """An integer from the environment; `default` if unset or invalid."""
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default
''', {"environ": ("environ", "overrides", "extra_vars"), "values": ("values", "parsed", "env_map", "variables"),
      "name": ("key", "var_name", "env_name")}),

    Template("semver", "parsing", '''
import re
from functools import total_ordering

PATTERN = re.compile(r"^v?(\\d+)\\.(\\d+)\\.(\\d+)(?:-([0-9A-Za-z.]+))?$$")


@total_ordering
class Version:
    def __init__(self, major, minor, patch, $pre=None):
        self.parts, self.$pre = (major, minor, patch), $pre

    def __lt__(self, other):
        return (self.parts, self.$pre is None) < (other.parts, other.$pre is None)


def parse_version(text):
    """Parse `1.2.3` or `v1.2.3-rc.1`."""
    if not isinstance(text, str):
        raise TypeError("expected a string")
?unused-variable:    cleaned = text.strip()
    match = PATTERN.match(text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    major, minor, patch, $pre = match.groups()
    return Version(int(major), int(minor), int(patch), $pre)
''', {"pre": ("pre", "prerelease", "tag")}),

    Template("order-handler", "HTTP handler", '''
import json
import logging
import uuid

log = logging.getLogger("$svc")


def create_order(request, db, $max_items=$limit, defaults=None):
    """POST /orders: validate the body and store a new order."""
    if defaults is None:
        defaults = {}
    try:
        $body = json.loads(request.body or "{}")
    except ValueError:
        return 400, {"error": "body is not JSON"}
    $lines = $body.get("lines")
    if not isinstance($lines, list) or not 0 < len($lines) <= $max_items:
        return 422, {"error": f"lines must be a list of 1 to {$max_items} items"}
?unused-variable:    received = len(request.body or "")
    $order_id = str(uuid.uuid4())
    db.insert("orders", {**defaults, "id": $order_id, "lines": $lines})
    log.info("order %s with %d lines", $order_id, len($lines))
    return 201, {"id": $order_id}
''', {"svc": ("orders", "shop", "checkout"), "max_items": ("max_items", "limit", "max_lines"),
      "limit": ("50", "100", "20"), "body": ("body", "payload", "data"),
      "lines": ("lines", "items", "entries"), "order_id": ("order_id", "new_id", "ident")}),

    Template("event-bus", "small class", '''
from collections import defaultdict


class $Bus:
    """Publish events to handlers subscribed by event name."""

    def __init__(self):
        self.$handlers = defaultdict(list)

    def subscribe(self, event_name, handler):
        self.$handlers[event_name].append(handler)

    def publish(self, event_name, $payload=None):
        for handler in self.$handlers.get(event_name, ()):
            handler($payload)


def load_subscriptions(bus, path, $registry):
    """Subscribe the handlers listed as `event handler` lines in a file."""
    with open(path, encoding="utf-8") as listing:
        for line in listing:
            event_name, _, handler_name = line.strip().partition(" ")
            handler = $registry.get(handler_name)
            if handler is not None:
                bus.subscribe(event_name, handler)
''', {"Bus": ("EventBus", "Dispatcher", "Broker", "PubSub"), "handlers": ("handlers", "listeners", "subscribers"),
      "payload": ("payload", "data", "message"),
      "registry": ("registry", "lookup", "known_handlers", "mapping")}),

    Template("dict-utils", "utility", '''
from copy import deepcopy


def deep_merge(base, $override):
    """Merge `$override` into a copy of `base`, recursing into nested dicts."""
    merged = deepcopy(base)
    for key, value in $override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = deep_merge(merged[key], value)
        merged[key] = value
    return merged


def drop_empty(data, $keep_keys=None):
    """A copy of `data` without None or empty-string values, except keep_keys."""
    if $keep_keys is None:
        $keep_keys = []
    $cleaned_map = {}
    for key, value in data.items():
        if key in $keep_keys or (value is not None and value != ""):
            $cleaned_map[key] = value
    return $cleaned_map
''', {"override": ("override", "extra", "patch_data", "updates"),
      "keep_keys": ("keep_keys", "always_keep", "required_keys"),
      "cleaned_map": ("cleaned_map", "result", "kept", "out")}),

    Template("grep-cli", "CLI", '''
import argparse
import re
import sys


def main(argv=None):
    """A small grep: print the lines of files that match a regular expression."""
    parser = argparse.ArgumentParser(prog="$prog")
    parser.add_argument("pattern")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    $regex = re.compile(args.pattern)
?unused-variable:    total_files = len(args.files)
    $found_any = False
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as source:
                for number, line in enumerate(source, start=1):
                    if $regex.search(line):
                        sys.stdout.write(f"{path}:{number}: {line}")
                        $found_any = True
        except OSError:
            sys.stderr.write(f"{path}: cannot read\\n")
    return 0 if $found_any else 1
''', {"regex": ("regex", "compiled", "matcher"), "prog": ("pygrep", "find-text", "search"),
      "found_any": ("found_any", "matched", "any_match")}),

    Template("moving-average", "data processing", '''
from collections import deque


def moving_average($samples, window=$window):
    """Averages over a sliding window; the first window-1 values average what is there."""
    if not isinstance(window, int) or window < 1:
        raise ValueError("window must be a positive integer")
?unused-variable:    count = len($samples)
    $recent = deque(maxlen=window)
    $averages = []
    for sample in $samples:
        $recent.append(sample)
        $averages.append(sum($recent) / len($recent))
    return $averages


def find_spikes($samples, factor=$factor, window=$window):
    """Indices where a sample exceeds `factor` times its moving average."""
    $baseline = moving_average($samples, window)
    return [i for i, (s, avg) in enumerate(zip($samples, $baseline)) if avg and s > factor * avg]
''', {"samples": ("samples", "values", "readings", "series"), "window": ("5", "3", "10", "7"),
      "recent": ("recent", "buffer", "last_values"), "averages": ("averages", "smoothed", "results"),
      "factor": ("2.0", "3.0", "1.5"), "baseline": ("baseline", "smooth", "trend")}),
)
