"""PII and secret detectors (positives, negatives, code that must stay clean), redaction, demographic balance, audit_records."""

from __future__ import annotations

import json

import pytest

from adhere.data.audit import (
    DETECTORS,
    MIN_MENTIONS_FOR_WARNING,
    TV_WARNING,
    AuditResult,
    Finding,
    audit_records,
    demographic_balance,
    find_pii,
    luhn_ok,
    redact,
    redact_record,
)

# (kind, text, expected matched texts). Negatives have an empty list.
CASES = [
    ("email", "write to jane.doe+tag@mail.example.co.uk today", ["jane.doe+tag@mail.example.co.uk"]),
    ("email", "<ops@example.com>.", ["ops@example.com"]),
    ("email", "git clone git@github.com:org/repo.git", []),  # SSH remote, no person
    ("email", "y = x@self.weight.T + b", []),  # matrix product without spaces
    ("email", "@property\ndef name(self): ...", []),
    ("email", "user@localhost", []),  # no top-level domain
    ("phone", "call (555) 123-4567 now", ["(555) 123-4567"]),
    ("phone", "call 555-123-4567.", ["555-123-4567"]),
    ("phone", "or 555.123.4567", ["555.123.4567"]),
    ("phone", "toll free 1-800-555-1234", ["1-800-555-1234"]),
    ("phone", "London +44 20 7946 0958", ["+44 20 7946 0958"]),
    ("phone", "US +1 (555) 123-4567, E.164 +14155552671", ["+1 (555) 123-4567", "+14155552671"]),
    ("phone", "Paris +33 1 23 45 67 89", ["+33 1 23 45 67 89"]),
    ("phone", 'File "app.py", line 12, in <module>', []),
    ("phone", "released 2024-01-05, v1.2.3, ids 123-456-7890", []),  # date, version, area code starting with 1
    ("phone", "shape (512, 256, 1024); sizes 512 256 1024", []),
    ("phone", "x = y +3.14159265 and offset +05:30", []),  # a float, a timezone
    ("phone", "+12 3", []),  # too few digits
    ("credit_card", "card 4111 1111 1111 1111 exp 12/27", ["4111 1111 1111 1111"]),
    ("credit_card", "card 4111-1111-1111-1111", ["4111-1111-1111-1111"]),
    ("credit_card", "mc 5555555555554444, amex 3782 822463 10005", ["5555555555554444", "3782 822463 10005"]),
    ("credit_card", "card 4111 1111 1111 1112", []),  # fails Luhn
    ("credit_card", "card 5555555555554443", []),  # fails Luhn
    ("credit_card", "ts_ms=1704412800000 ts_ns=1704412800000000000", []),  # starts with 1
    ("credit_card", "digits 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6", []),  # not grouped like a card
    ("credit_card", "pi = 3.1415926535897932384", []),
    ("ip_address", "host 192.168.1.20, gateway 10.0.0.1.", ["192.168.1.20", "10.0.0.1"]),
    ("ip_address", "v6 2001:db8::1 and fe80::1%eth0", ["2001:db8::1", "fe80::1"]),
    ("ip_address", "mapped ::ffff:192.0.2.1 here", ["::ffff:192.0.2.1"]),
    ("ip_address", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"]),
    ("ip_address", "bad 256.1.1.1 and 1.2.3.999", []),  # octet out of range
    ("ip_address", "version 1.2.3, numpy==1.26.4, 1.2.3.4.5, version 2.0.0.1, torch==2.1.0.1", []),
    ('ip_address', '__version__ = "4.0.1.2"', []),
    ("ip_address", 'app.run(host="0.0.0.0"); ("127.0.0.1", 5000); mask 255.255.255.0; ::1', []),
    ("ip_address", "a[1::2] + b[10::20] + c[:, ::-1]; at 10:30:45; mac 00:1A:2B:3C:4D:5E", []),
    ("national_id", "SSN 123-45-6789.", ["123-45-6789"]),
    ("national_id", "000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000", []),  # never issued
    ("national_id", "SSN 123456789", []),  # bare 9 digits: too often an id
    ("national_id", "NI AB123456C or AB 12 34 56 C", ["AB123456C", "AB 12 34 56 C"]),
    ("national_id", "QQ123456C GB123456A AB123456E ab123456c", []),  # bad prefix, bad suffix, lower case
    ("secret", "AKIAIOSFODNN7EXAMPLE", ["AKIAIOSFODNN7EXAMPLE"]),
    ("secret", "token ghp_" + "a1B2" * 9, ["ghp_" + "a1B2" * 9]),
    ("secret", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", ["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"]),
    ("secret", "OPENAI=sk-" + "abc123" * 8, ["sk-" + "abc123" * 8]),
    ("secret", "key sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5r_S7tU9-vW1xY3zA5bC7dE9", ["sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5r_S7tU9-vW1xY3zA5bC7dE9"]),
    ("secret", "pip install sk-my-own-model-name-here scikit-learn task-manager", []),
    ("secret", "SLACK xoxb-123456789012-abcdefABCDEF", ["xoxb-123456789012-abcdefABCDEF"]),
    ("secret", "maps AIza" + "Sy" + "B" * 33, ["AIza" + "Sy" + "B" * 33]),
    ("secret", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"]),
    ("secret", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nafter",
     ["-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"]),
    ("secret", "truncated -----BEGIN OPENSSH PRIVATE KEY-----", ["-----BEGIN OPENSSH PRIVATE KEY-----"]),
    ("secret", 'password = "hunter2hunter2"', ["hunter2hunter2"]),
    ("secret", '{"api_key": "a8f5f167f44f4964e6c998dee827110c"}', ["a8f5f167f44f4964e6c998dee827110c"]),
    ("secret", "DB_PASSWORD=s3cr3t-pa55 SECRET_KEY=3f9a8b7c6d5e", ["s3cr3t-pa55", "3f9a8b7c6d5e"]),
    ("secret", 'password = "short"', []),  # under 8 characters
    ("secret", "password = cfg.password; api_key=api_key; if password == confirm_password:", []),
    ("secret", 'api_key = "${API_KEY}"; password: "********"; api_key: "<your api key>"; API_KEY="your-api-key"', []),
    ("secret", 'tokenizer.pad_token = "<|endoftext|>"; special_token = "assistant"; max_tokens = 1024', []),
    ("secret", "def f(password: str, api_key: Optional[str] = None): ...", []),
]


@pytest.mark.parametrize("kind,text,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_detector(kind: str, text: str, expected: list[str]) -> None:
    found = DETECTORS[kind](text)
    assert [f.text for f in found] == expected
    for f in found:
        assert f.kind == kind and text[f.start : f.end] == f.text


CODE_SNIPPETS = [
    '''Traceback (most recent call last):
  File "/usr/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1501, in _call_impl
    return forward_call(*args, **kwargs)
  File "train.py", line 12, in <module>
RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity)''',
    '''import uuid, datetime
run_id = uuid.uuid4()  # e.g. 9f1c2d3e-4b5a-46c7-8d9e-0f1a2b3c4d5e
started = datetime.datetime(2024, 1, 5, 10, 30, 0)  # 2024-01-05T10:30:00+05:30
COLORS = {"red": "#FF0000", "magenta": 0xFF00FF, "bg": "rgba(12, 34, 56, 0.5)"}
PI = 3.14159
E = 2.718281828459045
out = x @ self.weight.T + self.bias
arr = a[::2] + b[1::3] + d[:, ::-1]
sha = "3f786850e387550fdab836ed7e6dc881de23001b"
big = 2305843009213693951  # 2**61 - 1, fails Luhn
''',
    '''requests>=2.31.0
numpy==1.26.4
torch==2.1.0.post1
# Python 3.11.7 on Ubuntu 22.04, CUDA 12.1, driver 535.104.05
''',
    '''def connect(password: str, api_key: Optional[str] = None):
    password = os.environ["DB_PASSWORD"]
    api_key = settings.API_KEY
    SECRET_KEY = os.getenv("SECRET_KEY", "")
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
    parser.add_argument("--password", help="Password for the database")
    app.run(host="0.0.0.0", port=8080)
    return requests.get("http://localhost:8000/api/v1/users/42", timeout=3.5)
''',
    '''line 12: E501 line too long (88 > 79 characters)
for i in range(1, 100): print(i, i * 1.5, 1e-5, -3.2e10, 10**9 + 7)
score = 0.8542; lr = 3e-4; step 1000/5000 loss 2.3456; ratio 16:9
isbn 978-3-16-148410-0; dates 05-01-2024, 01/05/2024, 2024.01.05
''',
]


@pytest.mark.parametrize("snippet", CODE_SNIPPETS)
def test_python_code_has_no_findings(snippet: str) -> None:
    assert find_pii(snippet) == []


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


def test_find_pii_is_sorted_non_overlapping_and_filters_kinds() -> None:
    text = "ip 10.1.2.3, mail a@example.org, ssn 123-45-6789, ip6 ::ffff:10.1.2.3"
    found = find_pii(text)
    assert [(f.kind, f.text) for f in found] == [
        ("ip_address", "10.1.2.3"), ("email", "a@example.org"), ("national_id", "123-45-6789"), ("ip_address", "::ffff:10.1.2.3")]
    assert all(a.end <= b.start for a, b in zip(found, found[1:]))
    assert [f.kind for f in find_pii(text, kinds=["email"])] == ["email"]
    with pytest.raises(ValueError, match="unknown PII kind.*'phon'.*expected some of email"):
        find_pii(text, kinds=["phon"])


def test_registry_is_the_documented_six() -> None:
    assert list(DETECTORS) == ["email", "phone", "credit_card", "ip_address", "national_id", "secret"]


def test_redact_golden() -> None:
    text = ("Mail jane@example.com or call (555) 123-4567 from 192.168.1.20; card 4111 1111 1111 1111, "
            'SSN 123-45-6789, password = "hunter2hunter2", key AKIAIOSFODNN7EXAMPLE.')
    assert redact(text, find_pii(text)) == (
        "Mail [EMAIL] or call [PHONE] from [IP_ADDRESS]; card [CREDIT_CARD], "
        'SSN [NATIONAL_ID], password = "[SECRET]", key [SECRET].')
    assert redact("nothing here", []) == "nothing here"


def test_redact_refuses_findings_from_another_text() -> None:
    with pytest.raises(ValueError, match="does not match the text"):
        redact("hello world", [Finding("email", 0, 5, "a@b.c")])


def test_balance_hand_computed() -> None:
    report = demographic_balance(["She said he and his brother left.", "The woman thanked her mother.", "A Christian and a Muslim."])
    gender = report["gender"]
    # female: she, woman, her, mother = 4; male: he, his, brother = 3. TV = 0.5 * (|4/7 - 1/2| + |3/7 - 1/2|) = 1/14.
    assert gender["counts"] == {"female": 4, "male": 3} and gender["total"] == 7
    assert gender["shares"] == {"female": 0.5714, "male": 0.4286}
    assert gender["tv_from_uniform"] == 0.0714 and gender["warning"] is None
    assert gender["top_terms"]["male"] == [["he", 1], ["his", 1], ["brother", 1]]
    # Five groups, two at 1/2: TV = 0.5 * (2 * (1/2 - 1/5) + 3 * 1/5) = 0.6.
    assert report["religion"]["tv_from_uniform"] == 0.6
    assert report["age"] == {"counts": {"young": 0, "old": 0}, "total": 0, "shares": {"young": 0.0, "old": 0.0},
                             "tv_from_uniform": None, "top_terms": {"young": [], "old": []}, "warning": None}
    assert json.loads(json.dumps(report)) == report


def test_balance_counts_whole_words_case_insensitively() -> None:
    report = demographic_balance(["HE, He and he; her_id, his2, theme, shell, mention, human, ManPage"])
    assert report["gender"]["counts"] == {"female": 0, "male": 3}


@pytest.mark.parametrize(
    "he,she,warns",
    [
        (16, 4, False),  # 20 mentions, TV exactly 0.3: not above the threshold
        (17, 3, True),  # TV 0.35
        (MIN_MENTIONS_FOR_WARNING - 1, 0, False),  # TV 0.5 but too few mentions to tell
        (40, 30, False),
    ],
)
def test_balance_warning_thresholds(he: int, she: int, warns: bool) -> None:
    gender = demographic_balance(["he"] * he + ["she"] * she)["gender"]
    assert (gender["warning"] is not None) == warns
    if warns:
        assert gender["tv_from_uniform"] > TV_WARNING
        assert gender["warning"].startswith(f"gender: 85% of {he + she} mentions are male terms")


def _record(user: str, assistant: str, row: int) -> dict:
    return {"messages": [{"role": "user", "content": user, "weight": 1}, {"role": "assistant", "content": assistant, "weight": 1}],
            "meta": {"source": "test", "row": row}}


RECORDS = [
    _record("Review: `x = a[::2]  # line 12`", "Looks fine; she would use a slice view.", 0),
    _record("My email is bob@example.com, call +1 (555) 123-4567.", "I will not store bob@example.com; he should rotate it.", 1),
    _record("Why does numpy==1.26.4 fail?", 'Never commit password = "hunter2hunter2".', 2),
]


def test_audit_records() -> None:
    result = audit_records(iter(RECORDS))
    assert isinstance(result, AuditResult) and result.records == 3
    assert sorted(result.findings) == [1, 2]
    assert {j: [(f.kind, f.text) for f in fs] for j, fs in result.findings[1].items()} == {
        0: [("email", "bob@example.com"), ("phone", "+1 (555) 123-4567")], 1: [("email", "bob@example.com")]}
    assert [(f.kind, f.text) for f in result.findings[2][1]] == [("secret", "hunter2hunter2")]
    assert result.totals == {"email": 2, "phone": 1, "credit_card": 0, "ip_address": 0, "national_id": 0, "secret": 1}
    assert result.balance["gender"]["counts"] == {"female": 1, "male": 1}
    summary = result.to_dict()
    assert summary["records_with_findings"] == 2 and summary["findings_by_kind"]["email"] == 2
    dumped = json.dumps(summary)
    assert "bob@example.com" not in dumped and "hunter2" not in dumped  # counts only, never the matched text
    assert audit_records(RECORDS, kinds=["secret"]).totals == {"secret": 1}


def test_redact_record_returns_a_new_record() -> None:
    result = audit_records(RECORDS)
    original = json.loads(json.dumps(RECORDS[1]))
    clean = redact_record(RECORDS[1], result.findings[1])
    assert [m["content"] for m in clean["messages"]] == [
        "My email is [EMAIL], call [PHONE].", "I will not store [EMAIL]; he should rotate it."]
    assert clean["messages"][0]["role"] == "user" and clean["meta"] == original["meta"]
    assert RECORDS[1] == original and clean["meta"] is not RECORDS[1]["meta"]
    assert redact_record(RECORDS[0], result.findings.get(0, {})) == RECORDS[0]

