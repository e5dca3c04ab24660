"""Bias and safety audit of the data stage: PII and secret detectors, and a demographic-term balance report.

Offline and pure Python (regular expressions and small word lists, no models).
The data stage calls `audit_records` over canonical records and decides what to do
with the result: flag (`AuditResult.to_dict()` goes into stats.json; it holds
counts, never the matched text) or redact:

    result = audit_records(records)
    clean = [redact_record(r, result.findings.get(i, {})) for i, r in enumerate(records)]

The detectors favour precision on the product's main data, Python code review:
line numbers, version strings, dates, floats, hex colours, UUIDs, slices and
tokenizer settings (`pad_token = "<pad>"`) must not match. The price is recall:
phone numbers without `+` are matched only in North American layouts, SSNs only
with dashes, a `password = value` only when the value is a literal. What each
detector matches and skips is in its docstring.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Finding:
    """One match: its kind (a key of DETECTORS), where it is (`end` exclusive), and the matched text."""

    kind: str
    start: int
    end: int
    text: str


def _finding(kind: str, text: str, start: int, end: int) -> Finding:
    return Finding(kind, start, end, text[start:end])


# ---- email -------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# Matrix products written without spaces (`x@self.weight`, `a@np.linalg`) parse as addresses.
_CODE_DOMAIN_HEADS = frozenset({"self", "cls", "np", "torch", "jnp", "tf"})


def detect_email(text: str) -> list[Finding]:
    """Addresses like `jane.doe+tag@mail.example.co.uk`.

    Skips SSH remotes (`git@github.com`: no person) and matrix products that
    parse as addresses (`x@self.weight`); needs a top-level domain of 2+ letters.
    """
    if "@" not in text:
        return []
    out = []
    for m in _EMAIL.finditer(text):
        local, domain = m.group().split("@", 1)
        if local.lower() == "git" or domain.split(".", 1)[0] in _CODE_DOMAIN_HEADS:
            continue
        out.append(_finding("email", text, m.start(), m.end()))
    return out


# ---- phone -------------------------------------------------------------------------------------

# International: `+`, a country code, then digits with single spaces, dots, dashes or one (area).
_PHONE_INTL = re.compile(r"(?<![\w)\].+])\+[1-9][\d ().-]{6,20}\d(?![\w]|[.-]\d)")
# North American: (555) 123-4567, 555-123-4567, 555.123.4567, optional leading 1. The area code
# starts with 2-9 (NANP rule), which also keeps `123-456-7890`-style sequences out.
_PHONE_NANP = re.compile(
    r"(?<![\w.+-])(?:1[ .-]?)?(?:\([2-9]\d{2}\) ?\d{3}[ .-]|[2-9]\d{2}([.-])\d{3}\1)\d{4}(?![\w-]|\.\d)"
)
_PHONE_BAD_SEPARATORS = re.compile(r"[ .-]{2}|\(\)|^\+\d+\.\d+$")  # `+1  2`, `()`, a float `+3.14159265`


def _plausible_intl(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    parens_ok = candidate.count("(") == candidate.count(")") <= 1
    # E.164 numbers are at most 15 digits; with the country code fewer than 8 is not a full number.
    return 8 <= digits <= 15 and parens_ok and not _PHONE_BAD_SEPARATORS.search(candidate)


def detect_phone(text: str) -> list[Finding]:
    """`+44 20 7946 0958`, `+1 (555) 123-4567`, `+14155552671`; `(555) 123-4567`, `555-123-4567`.

    Skips national numbers outside North America without `+` (`020 7946 0958`:
    a bare digit run is too often a count or an id), space-only North American
    layouts (`512 256 1024` is a list of sizes), 7-digit local numbers, dates,
    versions and floats.
    """
    out = [_finding("phone", text, m.start(), m.end()) for m in _PHONE_NANP.finditer(text)]
    if "+" in text:
        out += [_finding("phone", text, m.start(), m.end()) for m in _PHONE_INTL.finditer(text) if _plausible_intl(m.group())]
    return _non_overlapping(out)


# ---- credit card -------------------------------------------------------------------------------

_CARD = re.compile(
    r"(?<![\w.+-])(?:"
    r"\d{13,19}"  # contiguous
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"  # 4-4-4-4 (16) and 4-4-4-4-3 (19)
    r"|\d{4}([ -])\d{6}\2\d{4,5}"  # 4-6-5 (American Express 15) and 4-6-4 (Diners 14)
    r")(?![\w-]|\.\d)"
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every issued card number satisfies (1 in 10 random digit runs do too)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def detect_credit_card(text: str) -> list[Finding]:
    """13-19 digits, contiguous or grouped by spaces/dashes as printed on cards, passing Luhn.

    The first digit must be 2-6 (Mastercard 2/5, Amex/Diners/JCB 3, Visa 4,
    Discover/UnionPay 6), which keeps millisecond and nanosecond timestamps
    (`1704412800000`) out. Public test numbers (4242 4242 4242 4242) do match.
    """
    out = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if digits[0] in "23456" and luhn_ok(digits):
            out.append(_finding("credit_card", text, m.start(), m.end()))
    return out


# ---- IP address --------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
# `numpy==1.2.3.4`, `version 2.0.0.1`, `__version__ = "4.0.1.2"`: four-part versions, not hosts.
_VERSION_BEFORE = re.compile(r"(?i)(?:version|ver|[=<>~!]=|[\^~])[\s\"'=:_-]*$")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)"
)


def _boring_ipv4(address: str) -> bool:
    """0.0.0.0, loopback, broadcast and netmasks (255.255.255.0): in code everywhere, and no one's host."""
    value = int(ipaddress.IPv4Address(address))
    inverted = ~value & 0xFFFFFFFF
    is_mask = value != 0 and inverted & (inverted + 1) == 0  # ones then zeros
    return address.startswith(("0.", "127.")) or is_mask


def _plausible_ipv6(candidate: str) -> bool:
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    groups = [g for g in candidate.split(":") if g]
    # Slices (`x[1::2]`, `a[10::20]`) are valid IPv6 too; real addresses have a 4-digit group or 3+ groups.
    looks_real = any(len(g) >= 4 for g in groups) or len(groups) >= 3
    return looks_real and not (address.is_loopback or address.is_unspecified)


def detect_ip_address(text: str) -> list[Finding]:
    """IPv4 with every octet 0-255 (no leading zeros) and IPv6 (validated by `ipaddress`).

    Skips version strings (`1.2.3`, `1.2.3.4.5`, a 4-part version after
    `version`/`==`/`>=`), out-of-range octets (`256.1.1.1`), 0.0.0.0, loopback,
    netmasks, `::1`, `::`, slices (`x[1::2]`), times and MAC addresses.
    Private ranges (10.x, 192.168.x) do match: they map internal networks.
    """
    out = []
    if "." in text:
        for m in _IPV4.finditer(text):
            if not _boring_ipv4(m.group()) and not _VERSION_BEFORE.search(text, max(0, m.start() - 24), m.start()):
                out.append(_finding("ip_address", text, m.start(), m.end()))
    if "::" in text or text.count(":") >= 7:
        out += [_finding("ip_address", text, m.start(), m.end()) for m in _IPV6.finditer(text) if _plausible_ipv6(m.group())]
    return _non_overlapping(out)  # an IPv4 tail inside `::ffff:192.0.2.1` goes


# ---- national id -------------------------------------------------------------------------------

# US SSN: area 000, 666 and 900-999, group 00 and serial 0000 are never issued.
_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
# UK National Insurance number: two prefix letters (D F I Q U V never; O never second; BG GB NK KN
# TN NT ZZ never as a pair), six digits, a suffix A-D; optionally spaced `AB 12 34 56 C`.
_UK_NINO = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")


def detect_national_id(text: str) -> list[Finding]:
    """US Social Security numbers `ddd-dd-dddd` outside the never-issued ranges; UK NI numbers `AB123456C`.

    Skips SSNs without dashes (a bare 9-digit run is more often an id or a
    count) and lower-case NI numbers. Other countries' ids are not covered.
    """
    out = []
    if "-" in text:
        out += [_finding("national_id", text, m.start(), m.end()) for m in _SSN.finditer(text)]
    out += [_finding("national_id", text, m.start(), m.end()) for m in _UK_NINO.finditer(text)]
    return sorted(out, key=lambda f: f.start)


# ---- secrets -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?<![\w-])(?:"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub tokens
    r"|(?P<openai>sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,})"  # OpenAI-style
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWT: base64 of `{"` twice
    r")(?![\w-])"
)
_TOKEN_HINTS = ("AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "xox", "AIza", "eyJ")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----)?")
# A literal assigned to a secret-named key: `password = "..."`, `"api_key": "..."`, `API_KEY=...`.
# Bare `token` is not a key name: `pad_token = "<pad>"` is tokenizer vocabulary in this product's data.
_ASSIGNED = re.compile(
    r"(?i)(?:password|passwd|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|secret[_-]?key"
    r"|access[_-]?key|private[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token)"
    r"[\"']?[ \t]*(?:==?|:)[ \t]*"
    r"(?:(?P<q>[\"'])(?P<quoted>[^\"'\r\n]{8,256})(?P=q)|(?P<bare>[^\s\"'`,;()\[\]{}<>]{8,256}))"
)
_KEY_HINTS = ("pass", "secret", "key", "token")  # every key name above holds one; `in` is ~10x cheaper than the regex
_PLACEHOLDER = re.compile(r"(?i)^(?:[x*._#-]+|[$%{<].*|.*(?:your[_ -]|example|placeholder|changeme|redacted|dummy).*)$")
_CODE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")  # `password = user_password`, `cfg.secret`


def _assigned_value(m: re.Match[str]) -> tuple[int, int] | None:
    group = "quoted" if m.group("quoted") is not None else "bare"
    start, end = m.span(group)
    value = m.group(group)
    if group == "bare":
        value = value.rstrip(".:")  # `if password == other_password:`, end of a sentence
        end = start + len(value)
        # A bare name with no digit is a variable, not a literal; dotted names are attribute reads.
        if len(value) < 8 or _CODE_NAME.fullmatch(value) and ("." in value or not any(c.isdigit() for c in value)):
            return None
    return None if _PLACEHOLDER.match(value) else (start, end)


def detect_secret(text: str) -> list[Finding]:
    """API keys and credentials: AWS AKIA/ASIA ids, GitHub ghp_/gho_/ghs_/ghu_/ghr_/github_pat_,
    OpenAI-style `sk-...`, Slack `xox[abpr]-`, Google `AIza...`, JWTs, `-----BEGIN ... PRIVATE KEY-----`
    blocks (to the END line when present), and literal values of 8+ characters assigned to
    password/secret/api_key/access_token-like keys (the finding is the value only).

    Skips `sk-` names without a 20-character alphanumeric run (`sk-my-model-name`),
    values that are variables or attribute reads (`password = cfg.password`),
    templates and placeholders (`${PASSWORD}`, `<api-key>`, `your-api-key`, `xxxxxxxx`).
    """
    out = []
    if any(hint in text for hint in _TOKEN_HINTS):
        for m in _TOKEN.finditer(text):
            openai = m.group("openai")
            if openai and not (re.search(r"[A-Za-z0-9]{20,}", openai) and re.search(r"\d", openai)):
                continue
            out.append(_finding("secret", text, m.start(), m.end()))
    if "PRIVATE KEY" in text:
        out += [_finding("secret", text, m.start(), m.end()) for m in _PRIVATE_KEY.finditer(text)]
    low = text.lower()
    if any(hint in low for hint in _KEY_HINTS):
        for m in _ASSIGNED.finditer(text):
            span = _assigned_value(m)
            if span:
                out.append(_finding("secret", text, *span))
    return _non_overlapping(out)


# ---- registry, search, redaction ---------------------------------------------------------------

DETECTORS: dict[str, Callable[[str], list[Finding]]] = {
    "email": detect_email,
    "phone": detect_phone,
    "credit_card": detect_credit_card,
    "ip_address": detect_ip_address,
    "national_id": detect_national_id,
    "secret": detect_secret,
}


def _check_kinds(kinds: Iterable[str] | None) -> list[str]:
    if kinds is None:
        return list(DETECTORS)
    names = list(kinds)
    unknown = [k for k in names if k not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown PII kind(s) {', '.join(map(repr, unknown))}: expected some of {', '.join(DETECTORS)}")
    return names


def _non_overlapping(findings: Iterable[Finding]) -> list[Finding]:
    """Sorted by start; where two overlap, the one starting first wins, then the longer."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, f.start - f.end, f.kind)):
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept


def find_pii(text: str, kinds: Iterable[str] | None = None) -> list[Finding]:
    """All findings of the given kinds (default: every detector), non-overlapping, sorted by position."""
    return _non_overlapping(f for name in _check_kinds(kinds) for f in DETECTORS[name](text))


def redact(text: str, findings: Iterable[Finding]) -> str:
    """`text` with each finding replaced by its label: `[EMAIL]`, `[PHONE]`, `[SECRET]`, ...

    Raises ValueError when a finding's text is not at its position (findings from another text).
    """
    parts, pos = [], 0
    for f in _non_overlapping(findings):
        if text[f.start : f.end] != f.text:
            raise ValueError(f"finding {f.kind} at {f.start}:{f.end} does not match the text there; was it found in another text?")
        parts += [text[pos : f.start], f"[{f.kind.upper()}]"]
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


# ---- demographic balance -----------------------------------------------------------------------

# axis -> group -> whole-word terms (case-insensitive). Gender is female vs male only: "they/them"
# are mostly plural and "person/people" carry no gender, so they say nothing about balance.
# Left out on purpose, because code text uses them in other senses: "old"/"young" (old_value is
# one word, but "the old version" is common), "child"/"children" (tree and DOM nodes), "minor"
# (minor version), "ms" (milliseconds), "miss" (cache miss), "king"/"queen" (chess).
AXES: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "female": ("she", "her", "hers", "herself", "woman", "women", "girl", "girls", "mother", "mothers",
                   "daughter", "daughters", "sister", "sisters", "wife", "wives", "mom", "mum", "aunt", "niece",
                   "grandmother", "female", "females", "girlfriend", "mrs"),
        "male": ("he", "him", "his", "himself", "man", "men", "boy", "boys", "father", "fathers",
                 "son", "sons", "brother", "brothers", "husband", "husbands", "dad", "uncle", "nephew",
                 "grandfather", "male", "males", "boyfriend", "mr"),
    },
    "age": {
        "young": ("teen", "teens", "teenager", "teenagers", "youth", "youths", "youngster", "youngsters",
                  "adolescent", "adolescents", "toddler", "toddlers", "baby", "babies", "kid", "kids"),
        "old": ("elderly", "elder", "elders", "senior", "seniors", "retiree", "retirees", "pensioner",
                "pensioners", "grandparent", "grandparents", "grandma", "grandpa"),
    },
    "religion": {
        "christian": ("christian", "christians", "christianity", "catholic", "catholics", "protestant", "protestants"),
        "muslim": ("muslim", "muslims", "islam", "islamic"),
        "jewish": ("jew", "jews", "jewish", "judaism"),
        "hindu": ("hindu", "hindus", "hinduism"),
        "buddhist": ("buddhist", "buddhists", "buddhism"),
    },
}
# Warn only with 20+ mentions: for two groups at 50/50, the share's standard deviation over 20
# mentions is 0.11, so an 80/20 split (TV 0.3) is a 2.7-sigma event, not noise. Below that, skip.
MIN_MENTIONS_FOR_WARNING = 20
# TV 0.3 is an 80/20 split for two groups, or one group holding 50% of five (uniform: 20% each).
TV_WARNING = 0.3
TOP_TERMS = 5  # per group in the report, to check whether a skew comes from a word's other sense

_TERM_SET = frozenset(t for groups in AXES.values() for terms in groups.values() for t in terms)
_WORD = re.compile(r"\w+")  # whole words: `her_id` and `his2` are identifiers, not pronouns


class BalanceCounter:
    """Counts demographic terms text by text; `report()` gives what `demographic_balance` returns."""

    def __init__(self) -> None:
        self.terms: Counter[str] = Counter()

    def add(self, text: str) -> None:
        self.terms.update([w for w in _WORD.findall(text.lower()) if w in _TERM_SET])

    def report(self) -> dict[str, Any]:
        return {axis: self._axis(axis, groups) for axis, groups in AXES.items()}

    def _axis(self, axis: str, groups: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        counts = {g: sum(self.terms[t] for t in terms) for g, terms in groups.items()}
        total = sum(counts.values())
        shares = {g: round(c / total, 4) if total else 0.0 for g, c in counts.items()}
        tv = round(0.5 * sum(abs(c / total - 1 / len(groups)) for c in counts.values()), 4) if total else None
        top = {g: [[t, self.terms[t]] for t in sorted(terms, key=lambda t: -self.terms[t])[:TOP_TERMS] if self.terms[t]]
               for g, terms in groups.items()}
        warning = None
        if total >= MIN_MENTIONS_FOR_WARNING and tv is not None and tv > TV_WARNING:
            leader = max(counts, key=counts.__getitem__)
            warning = (f"{axis}: {shares[leader]:.0%} of {total} mentions are {leader} terms (total-variation distance "
                       f"from uniform {tv:.2f} > {TV_WARNING}); check top_terms before rebalancing, as some words have other senses")
        return {"counts": counts, "total": total, "shares": shares, "tv_from_uniform": tv, "top_terms": top, "warning": warning}


def demographic_balance(texts: Iterable[str]) -> dict[str, Any]:
    """Per axis (AXES): counts, total, shares, total-variation distance from uniform, top terms, warning.

    TV = 0.5 * sum |share_i - 1/k| over the k groups (None when the axis has no mentions);
    shares and TV are rounded to 4 decimals. The result is JSON-serialisable.
    """
    counter = BalanceCounter()
    for text in texts:
        counter.add(text)
    return counter.report()


# ---- records -----------------------------------------------------------------------------------


@dataclass
class AuditResult:
    """What `audit_records` found over canonical records."""

    records: int
    findings: dict[int, dict[int, list[Finding]]]  # record index -> message index -> findings (only non-empty)
    totals: dict[str, int]  # kind -> findings over all records
    balance: dict[str, Any]  # demographic_balance over every message's content

    def to_dict(self) -> dict[str, Any]:
        """The summary for stats.json: counts and balance, never the matched text."""
        return {"records": self.records, "records_with_findings": len(self.findings),
                "findings_by_kind": dict(self.totals), "demographic_balance": self.balance}


def audit_records(records: Iterable[dict[str, Any]], kinds: Iterable[str] | None = None) -> AuditResult:
    """Run the detectors (default: all) on every message of every canonical record, and count demographic terms."""
    names = _check_kinds(kinds)
    counter = BalanceCounter()
    findings: dict[int, dict[int, list[Finding]]] = {}
    totals = dict.fromkeys(names, 0)
    n = 0
    for n, record in enumerate(records, 1):
        per_message = {}
        for j, message in enumerate(record["messages"]):
            content = message["content"]
            counter.add(content)
            found = find_pii(content, names)
            if found:
                per_message[j] = found
                for f in found:
                    totals[f.kind] += 1
        if per_message:
            findings[n - 1] = per_message
    return AuditResult(n, findings, totals, counter.report())


def redact_record(record: dict[str, Any], findings: dict[int, list[Finding]]) -> dict[str, Any]:
    """A new record whose message contents are redacted (`findings`: message index -> findings).

    The input is not modified: messages are new dicts, meta a shallow copy.
    """
    messages = [dict(m, content=redact(m["content"], findings[j])) if findings.get(j) else dict(m)
                for j, m in enumerate(record["messages"])]
    out = dict(record, messages=messages)
    if isinstance(record.get("meta"), dict):
        out["meta"] = dict(record["meta"])
    return out
