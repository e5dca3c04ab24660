"""Code templates for the training split; the evaluation split's are in templates_eval.py, and no
template appears in both, so evaluation measures reviewing code the model has not seen.

Each is clean (ruff finds nothing on the checklist in it) and 16-25 lines long, short because
training time on 2 CPU cores grows with every prompt token; `snippets.py` plants the findings.
"""

from snippets import Template

TEMPLATES = (
    Template("csv-loader", "data loading", '''
import csv
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def load_$things(path, required=None):
    """Read $things from a CSV file, skipping incomplete rows."""
    if required is None:
        required = []
    $rows = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
?unused-variable:        header = reader.fieldnames
        for row in reader:
            if any(row.get(name) is None for name in required):
                continue
            try:
                row["$num"] = float(row["$num"])
            except (KeyError, ValueError):
                continue
            $rows.append(row)
    logger.info("loaded %d $things from %s", len($rows), Path(path).name)
    return $rows
''', {"things": ("orders", "customers", "invoices", "products", "shipments", "tickets"),
      "rows": ("rows", "records", "items", "entries", "results"), "num": ("amount", "price", "weight", "score")}),

    Template("jsonl-io", "data loading", '''
import json
from typing import Iterator


def iter_$things(path, skip_invalid=True):
    """Yield the object on each line of a JSON Lines file."""
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if not skip_invalid:
                    raise ValueError(f"{path}:{line_number}: invalid JSON")


def write_$things(path, $rows: Iterator[dict], extra=None):
    """Write $things as JSON Lines, each with the `extra` fields added."""
    if extra is None:
        extra = {}
    with open(path, "w", encoding="utf-8") as stream:
        for row in $rows:
            if isinstance(row, dict):
                stream.write(json.dumps({**row, **extra}) + "\\n")
''', {"things": ("events", "messages", "readings", "payments", "logins", "sessions"),
      "rows": ("rows", "records", "entries", "values", "items")}),

    Template("kv-config", "parsing", '''
import os


def parse_config(text, $defaults=None):
    """Parse `key = value` lines; lines starting with # are comments."""
    if $defaults is None:
        $defaults = {}
    $settings = {"$opt_a": "$val_a", **$defaults}
    for raw_line in text.splitlines():
        stripped = raw_line.strip()
        if stripped and not stripped.startswith("#"):
            $name, _, value = stripped.partition("=")
            $settings[$name.strip()] = value.strip()
    return $settings


def load_config(path):
    """Read the config file at `path`; APP_$ENV overrides $opt_a."""
    with open(path, encoding="utf-8") as config_file:
        $settings = parse_config(config_file.read())
?unused-variable:    env_name = "APP_$ENV"
    env_value = os.environ.get("APP_$ENV")
    if env_value is not None:
        $settings["$opt_a"] = env_value
    return $settings
''', {"opt_a": ("host", "region", "bucket", "queue"), "val_a": ("localhost", "eu-west-1", "default", "main"),
      "defaults": ("defaults", "overrides", "extra", "base"),
      "settings": ("settings", "config", "merged", "lookup", "options"),
      "name": ("key", "setting_name", "option_name", "field_name"), "ENV": ("HOST", "REGION", "BUCKET", "QUEUE")}),

    Template("log-parser", "parsing", '''
import re
from datetime import datetime

LINE = re.compile(r"^(\\S+) \\[(\\w+)\\] ($svc): (.*)$$")


def parse_line(line):
    """Split a log line into time, level, service and text; None if it does not match."""
    match = LINE.match(line)
    if match is None:
        return None
    stamp, level, service, text = match.groups()
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return {"when": when, "level": level, "service": service, "text": text}


def $count_fn(path, level="$level"):
    """How many lines of a log file have this level."""
    with open(path, encoding="utf-8") as log_file:
        $parsed = [parse_line(line) for line in log_file]
    return sum(1 for entry in $parsed if entry is not None and entry["level"] == level)
''', {"svc": ("api|worker", "web|db", "auth|billing", "scheduler|mailer"),
      "count_fn": ("count_level", "level_count", "count_lines_at", "tally_level"),
      "level": ("INFO", "WARNING", "ERROR"), "parsed": ("parsed", "entries", "parsed_lines", "results")}),

    Template("user-handler", "HTTP handler", '''
import json
import logging
from http import HTTPStatus

logger = logging.getLogger("$service")


def handle_get_$thing(request, store, fields=None):
    """Return the $thing named in the path as JSON, only `fields` if given."""
    if fields is None:
        fields = []
    $key = request.path_params.get("$key")
    if $key is None:
        return {"status": HTTPStatus.BAD_REQUEST, "body": "missing $key"}
?unused-variable:    started = request.headers.get("X-Request-Start")
    try:
        $thing = store.fetch($key)
    except KeyError:
        logger.warning("no $thing %s", $key)
        return {"status": HTTPStatus.NOT_FOUND, "body": "not found"}
    if fields:
        $thing = {name: $thing[name] for name in fields if name in $thing}
    return {"status": HTTPStatus.OK, "body": json.dumps($thing, default=str)}
''', {"thing": ("user", "account", "profile", "member", "customer"),
      "service": ("api", "users", "accounts", "gateway"), "key": ("user_id", "account_id", "record_id", "key")}),

    Template("webhook-handler", "HTTP handler", '''
import hashlib
import hmac
import json
from hmac import compare_digest


def verify_signature(payload, signature, secret):
    """Check the webhook's HMAC-SHA256 signature."""
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return compare_digest(expected, signature)


def handle_webhook(request, queue, secret):
    """Validate a $provider webhook and queue its $event events."""
    signature = request.headers.get("X-Signature")
    if signature is None or not verify_signature(request.body, signature, secret):
        return 401, "bad signature"
    try:
        $payload = json.loads(request.body)
    except ValueError:
        return 400, "invalid JSON"
    $event_type = $payload.get("event", "") if isinstance($payload, dict) else ""
    if $event_type.startswith("$event."):
        queue.put($payload)
    return 200, "ok"
''', {"provider": ("payment", "GitHub", "Stripe", "shipping", "chat"),
      "event": ("invoice", "push", "charge", "order", "message"),
      "payload": ("payload", "event_data", "message", "body_data"),
      "event_type": ("event_type", "kind", "category", "event_name")}),

    Template("lru-cache", "small class", '''
from collections import OrderedDict


class $Cache:
    def __init__(self, capacity=$cap):
        self.capacity = capacity
        self.entries = OrderedDict()

    def get(self, $key, default=None):
        if $key in self.entries:
            self.entries.move_to_end($key)
        return self.entries.get($key, default)

    def put(self, $key, value):
        self.entries[$key] = value
        self.entries.move_to_end($key)
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


def cached_call(cache, $key, $loader):
    """The cached value for $key, loaded and stored on a miss."""
    value = cache.get($key)
    if value is None:
        try:
            value = $loader($key)
        except LookupError:
            return None
        cache.put($key, value)
    return value
''', {"Cache": ("LruCache", "RecentCache", "BoundedCache", "PageCache"), "cap": ("128", "256", "64", "1000"),
      "key": ("key", "name", "url", "item_key"), "loader": ("loader", "fetch", "load_value", "compute")}),

    Template("cart", "small class", '''
import json
from dataclasses import dataclass, field


@dataclass
class $Cart:
    $owner: str
    lines: list = field(default_factory=list)

    def add(self, sku, quantity, unit_price):
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.lines.append((sku, quantity, unit_price))


def cart_from_json(text, $owner_arg=None):
    """Build a cart from its JSON form."""
    $data = json.loads(text)
    if not isinstance($data, dict):
        raise ValueError("expected a JSON object")
    cart = $Cart($data.get("$owner") if $owner_arg is None else $owner_arg)
    for entry in $data.get("lines", []):
        cart.add(entry["sku"], entry["quantity"], entry["unit_price"])
    return cart
''', {"Cart": ("Cart", "Basket", "Order", "Checkout"), "owner": ("owner", "customer", "user_name", "buyer"),
      "owner_arg": ("owner_name", "buyer_name", "assign_to"), "data": ("data", "parsed", "raw", "obj")}),

    Template("rate-limiter", "small class", '''
from time import monotonic


class $Limiter:
    """Allow at most `rate` calls per `per` seconds (token bucket)."""

    def __init__(self, rate, per=$per, clock=None):
        if isinstance(rate, bool) or rate <= 0:
            raise ValueError("rate must be a positive number")
        if clock is None:
            clock = monotonic
        self.rate, self.per, self.clock = rate, per, clock
        self.$tokens = float(rate)
        self.updated = clock()

    def allow(self):
        now = self.clock()
?unused-variable:        previous = self.$tokens
        refill = (now - self.updated) * self.rate / self.per
        self.updated = now
        self.$tokens = min(self.rate, self.$tokens + refill)
        if self.$tokens < 1:
            return False
        self.$tokens -= 1
        return True
''', {"Limiter": ("RateLimiter", "TokenBucket", "Throttle", "CallLimiter"), "per": ("1.0", "60.0", "10.0"),
      "tokens": ("tokens", "allowance", "budget")}),

    Template("iter-utils", "utility", '''
from itertools import islice


def chunked($items, size):
    """Split an iterable into lists of at most `size` items."""
    if not isinstance(size, int) or size < 1:
        raise ValueError("size must be a positive integer")
    iterator = iter($items)
    while True:
        $batch = list(islice(iterator, size))
        if not $batch:
            return
        yield $batch


def group_by(elements, key_func, $groups=None):
    """Group elements into a dict of lists by `key_func(element)`."""
    if $groups is None:
        $groups = {}
    for element in elements:
        $groups.setdefault(key_func(element), []).append(element)
    return $groups
''', {"items": ("items", "values", "iterable", "source"), "batch": ("batch", "chunk", "group", "page_items"),
      "groups": ("groups", "buckets", "grouped")}),

    Template("retry", "utility", '''
import logging
from time import sleep

logger = logging.getLogger(__name__)


def retry($func, attempts=$n, delay=$delay, retry_on=None):
    """Call `$func` until it succeeds, waiting longer after each failure."""
    if retry_on is None:
        retry_on = (ConnectionError, TimeoutError)
    $wait = delay
    for attempt in range(1, attempts + 1):
        try:
            return $func()
        except retry_on as exc:
            if attempt == attempts:
                raise
?unused-variable:            message = str(exc)
            logger.warning("attempt %d failed: %s", attempt, exc)
            sleep($wait)
            $wait *= 2
    return None


def is_transient(error):
    """Whether an error is worth retrying."""
    $status_code = getattr(error, "status", None)
    return isinstance(error, TimeoutError) or ($status_code is not None and $status_code >= 500)
''', {"func": ("func", "operation", "call", "task"), "n": ("3", "5", "4"), "delay": ("0.5", "1.0", "0.2"),
      "wait": ("wait", "pause", "backoff", "sleep_for"),
      "status_code": ("status_code", "status", "http_status", "code")}),

    Template("slugify", "utility", '''
import re
from unicodedata import normalize

WORDS = re.compile(r"[a-z0-9]+")


def slugify(text, separator="-", max_length=$maxlen):
    """A lowercase ASCII slug of `text`, at most `max_length` characters."""
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    ascii_text = normalize("NFKD", text).encode("ascii", "ignore").decode()
    $parts = WORDS.findall(ascii_text.lower())
    return separator.join($parts)[:max_length].rstrip(separator)


def unique_slug(title, existing):
    """A slug for `title` that is not in `existing`."""
    base = slugify(title)
?unused-variable:    attempts = len(existing)
    candidate, counter = base, 2
    while candidate in existing:
        candidate = f"{base}-{counter}"
        counter += 1
    return candidate
''', {"maxlen": ("50", "60", "80", "40"), "parts": ("parts", "tokens", "pieces", "names")}),

    Template("wordcount-cli", "CLI", '''
import argparse
import sys
from collections import Counter


def main(argv=None):
    """Print the most common words of a file."""
    parser = argparse.ArgumentParser(description="$desc")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=$top)
    args = parser.parse_args(argv)
    $counts = Counter()
    try:
        with open(args.path, encoding="utf-8") as stream:
            for line in stream:
                $counts.update(line.lower().split())
    except FileNotFoundError:
        sys.stderr.write(f"no such file: {args.path}\\n")
        return 1
    for word, number in $counts.most_common(args.top):
        sys.stdout.write(f"{number:6d} {word}\\n")
    return 0
''', {"counts": ("counts", "tally", "frequencies", "word_counts"),
      "desc": ("Count words.", "Show frequent words.", "Word frequency report."), "top": ("10", "20", "5")}),

    Template("backup-cli", "CLI", '''
import argparse
import shutil
from datetime import date
from pathlib import Path


def backup_file(source, $dest_dir, keep=$keep):
    """Copy `source` into `$dest_dir` with today's date; keep the newest `keep` copies."""
    source = Path(source)
?unused-variable:    stamp = date.today().isoformat()
    target = Path($dest_dir) / f"{source.stem}-{date.today():%Y%m%d}{source.suffix}"
    shutil.copy2(source, target)
    $copies = sorted(Path($dest_dir).glob(f"{source.stem}-*{source.suffix}"))
    for old in $copies[:-keep]:
        try:
            old.unlink()
        except FileNotFoundError:
            continue
    return target


def main():
    """Back up the files named on the command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--to", default="$default_dir")
    args = parser.parse_args()
    for name in args.files:
        backup_file(name, args.to)
''', {"dest_dir": ("dest_dir", "folder", "directory", "backup_dir"), "keep": ("5", "7", "10", "3"),
      "copies": ("copies", "backups", "existing", "entries"), "default_dir": ("backups", ".backup", "archive")}),

    Template("stats", "data processing", '''
import math
from statistics import median


def describe($values, $precision=$prec):
    """Count, mean, median and standard deviation of a list of numbers."""
    $clean = [v for v in $values if v is not None and not math.isnan(v)]
?unused-variable:    dropped = len($values) - len($clean)
    if not $clean:
        return {"count": 0}
    mean = sum($clean) / len($clean)
    variance = sum((v - mean) ** 2 for v in $clean) / len($clean)
    return {
        "count": len($clean),
        "mean": round(mean, $precision),
        "median": round(median($clean), $precision),
        "std": round(math.sqrt(variance), $precision),
    }
''', {"values": ("values", "numbers", "samples", "data_points"), "precision": ("precision", "digits", "ndigits"),
      "prec": ("2", "3", "4"), "clean": ("clean", "valid", "kept", "finite_values")}),

    Template("sqlite-repo", "data access", '''
import sqlite3
from contextlib import closing


def open_db(path):
    """Open the database and create the $table table if needed."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass
    connection.execute("CREATE TABLE IF NOT EXISTS $table (id INTEGER PRIMARY KEY, $col TEXT, score REAL)")
    return connection


def top_$things(connection, $limit=$n, min_score=None):
    """The best-scoring $things."""
    query, params = "SELECT $col, score FROM $table", []
    if min_score is not None:
        query += " WHERE score >= ?"
        params.append(min_score)
    with closing(connection.execute(query + " ORDER BY score DESC LIMIT ?", [*params, $limit])) as cur:
        return cur.fetchall()
''', {"table": ("players", "results", "reviews", "matches"), "col": ("name", "title", "label", "player"),
      "things": ("players", "results", "reviews", "matches"), "limit": ("limit", "count", "top_n"),
      "n": ("10", "5", "20")}),

    Template("date-utils", "utility", '''
from datetime import date, datetime, timedelta


def parse_day(value):
    """A date from a date, a datetime or an ISO string."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value.strip())


def business_days(start, end, $holidays=None):
    """Weekdays from `start` to `end` inclusive, minus holidays."""
    if $holidays is None:
        $holidays = []
    $current_day = parse_day(start)
    $days = []
    while $current_day <= parse_day(end):
        if $current_day.weekday() < 5 and $current_day not in $holidays:
            $days.append($current_day)
        $current_day += timedelta(days=1)
    return $days
''', {"holidays": ("holidays", "closed_days", "skip_days", "excluded"),
      "current_day": ("day", "current", "cursor_day"), "days": ("days", "result_days", "open_days", "results")}),

    Template("report-writer", "file output", '''
import csv
import json
from pathlib import Path


def write_report($rows, out_dir, $fmt="$default_fmt"):
    """Write rows as CSV or JSON into out_dir; return the file path."""
    target = Path(out_dir) / f"$name.{$fmt}"
    if $fmt == "json":
        with open(target, "w", encoding="utf-8") as out:
            out.write(json.dumps($rows, indent=2))
    elif $fmt == "csv":
        $columns = sorted({key for row in $rows for key in row})
        with open(target, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=$columns)
            writer.writeheader()
            writer.writerows($rows)
    else:
        raise ValueError(f"unknown format {$fmt!r}")
    return target
''', {"rows": ("rows", "records", "entries", "results"), "fmt": ("fmt", "output_format", "file_format"),
      "default_fmt": ("csv", "json"), "name": ("report", "summary", "export", "daily"),
      "columns": ("columns", "field_names", "header_names")}),
)
