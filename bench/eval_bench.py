"""Benchmark of the local generation backend: one prompt at a time vs batched, on the embedded model.

    .venv/bin/python bench/eval_bench.py                         # 64 prompts x up to 128 new tokens; ~15 min on 2 cores
    .venv/bin/python bench/eval_bench.py --prompts 16 --no-docs  # a quick look, about 3 minutes
    .venv/bin/python bench/eval_bench.py --no-bf16               # skip the bf16 autocast run (the slowest on CPUs
                                                                 # without native bf16)

SmolLM2-135M-Instruct (the embedded float32 folder) answers 64 prompts written below (instructions
of 5 to 120 words, 20 of them code reviews with a function to read, some with a system prompt),
greedy, up to 128 new tokens each, through `adhere.generation.LocalBackend`: first one prompt at a
time (batch 1), then in length-sorted, left-padded batches of 8, 16 and 64. Throughput is
generated tokens (each answer's completion_tokens, its end-of-turn token included) over the wall
time of the whole run; the ratio to one-at-a-time is the figure to watch (target >= 4x on 2 cores).
Outputs are compared as text with the one-at-a-time answers. Then, unless --no-bf16, the best batch
size runs again under bf16 autocast, which counts how many of the greedy answers change. A table
goes to stdout and, unless --no-docs, between this script's markers at the end of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

HEADING = "## Generation: one at a time vs batched (bench/eval_bench.py)"
BEGIN = "<!-- eval_bench.py writes from here -->"
END = "<!-- eval_bench.py writes to here -->"
MAX_NEW_TOKENS = 128
REVIEWER = "You are a careful Python code reviewer. Answer in JSON with keys verdict, issues and summary."

INSTRUCTIONS = [
    "Name three primary colors.",
    "What is the capital of Japan?",
    "Translate 'good morning' into French.",
    "Give me a synonym for 'happy'.",
    "How many days are there in a leap year?",
    "Write a haiku about autumn leaves.",
    "Explain what a prime number is in one sentence.",
    "List four planets of the solar system.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "What is the boiling point of water at sea level, in Celsius and Fahrenheit?",
    "Suggest a name for a coffee shop that also sells books.",
    "Write a polite email declining a meeting invitation for Thursday afternoon.",
    "Explain the difference between weather and climate to a ten-year-old.",
    "Give three tips for staying focused while working from home.",
    "Describe how a rainbow forms, in simple terms.",
    "What are the main causes of inflation? Answer in a short paragraph.",
    "Write a short motivational message for a friend who is starting a new job tomorrow.",
    "Convert 5 kilometers to miles and show the calculation.",
    "Explain what an API is, using a restaurant as an analogy.",
    "List the steps to make a cup of tea, numbered.",
    "Write a limerick about a cat who loves to code.",
    "What is photosynthesis? Keep the answer under fifty words.",
    "Give two arguments for and two against school uniforms.",
    "Explain recursion to a beginner programmer with a small example.",
    "Write a product description for a reusable water bottle that keeps drinks cold for 24 hours.",
    "Rewrite this sentence in the passive voice: The committee approved the new budget on Monday.",
    ("Plan a one-day itinerary for a tourist visiting Paris for the first time, with morning, afternoon "
    "and evening activities."),
    "I have eggs, spinach, cheese and bread. Suggest a quick breakfast recipe with step-by-step instructions.",
    "Explain the difference between a list and a tuple in Python, and say when you would use each.",
    "Write a short story opening (three sentences) set on a spaceship where the lights have just gone out.",
    ("Compare electric cars and petrol cars in terms of cost, maintenance and environmental impact. Use a "
    "bulleted list for each aspect."),
    ("You are a customer support agent. A customer says their package arrived damaged. Write a reply that "
    "apologizes, explains the next steps, and offers a solution."),
    ("Explain how HTTPS keeps a connection private. Mention certificates, the handshake and symmetric "
    "encryption, but keep it understandable for someone who is not an engineer."),
    ("Write a cover letter paragraph for a junior data analyst position, highlighting skills in SQL, Excel "
    "and communicating results to non-technical colleagues."),
    ("Give me a weekly workout plan for a beginner who can exercise three times a week for 30 minutes, "
    "with no equipment at home."),
    "Answer in exactly three bullet points: why is sleep important for learning?",
    ("Write a tweet (under 280 characters) announcing the release of version 2.0 of an open-source note-taking "
    "app, mentioning offline sync and end-to-end encryption."),
    ("Explain the Monty Hall problem and why switching doors improves the chance of winning. Use numbers to "
    "show the probabilities."),
    "Describe the water cycle in four stages, one sentence each, and name each stage in bold.",
    "A train leaves at 9:40 and arrives at 13:15. How long is the journey? Show your reasoning.",
    ("Draft a short agenda for a 30-minute team meeting about planning the next product release: who "
    "speaks, for how long, and what decisions must be made by the end."),
    "Write a JSON object describing a book with the fields title, author, year and genres (a list).",
    ("Explain in plain words what overfitting means in machine learning, and give one way to reduce it. The "
    "reader is a product manager who knows spreadsheets but has never trained a model, so avoid jargon, "
    "use an everyday analogy, and finish with a one-sentence summary they could repeat to their team."),
    ("My houseplant's leaves are turning yellow and the soil stays wet for days after watering. It sits in a "
    "corner far from the window. What could be wrong, and what should I change? Give the most likely "
    "cause first, then two other possibilities, and a short checklist of what to do this week."),
]

CODE = [
    "def average(values):\n    total = 0\n    for v in values:\n        total += v\n    return total / len(values)",
    "def read_config(path):\n    f = open(path)\n    data = f.read()\n    return eval(data)",
    ("def find_user(users, name):\n    for i in range(len(users)):\n        if users[i]['name'] == name:\n"
    "            return users[i]\n    return None"),
    "def parse_age(text):\n    try:\n        return int(text)\n    except:\n        pass",
    "def merge(a, b):\n    result = a\n    for key in b:\n        result[key] = b[key]\n    return result",
    ("def unique(items):\n    seen = []\n    out = []\n    for x in items:\n        if x not in seen:\n"
    "            seen.append(x)\n            out.append(x)\n    return out"),
    "def is_admin(user):\n    if user.role == None:\n        return False\n    return user.role == 'admin'",
    "import os\n\ndef delete_file(name):\n    os.system('rm ' + name)",
    "def join_words(words):\n    s = ''\n    for w in words:\n        s = s + w + ' '\n    return s",
    "def append_item(item, items=[]):\n    items.append(item)\n    return items",
    "class Counter:\n    count = 0\n\n    def increment(self):\n        Counter.count += 1\n        return Counter.count",
    "def fetch(url):\n    import requests\n    r = requests.get(url)\n    return r.json()['data']",
    "def chunks(seq, n):\n    return [seq[i:i + n] for i in range(0, len(seq), n)]",
    ("def max_value(d):\n    best = None\n    for k in d.keys():\n        if best is None or d[k] > d[best]:\n"
    "            best = k\n    return d[best]"),
    "def save(records, path):\n    with open(path, 'w') as f:\n        for r in records:\n            f.write(str(r))",
    "def query(db, user_id):\n    sql = f\"SELECT * FROM users WHERE id = {user_id}\"\n    return db.execute(sql).fetchall()",
    "def retry(fn):\n    while True:\n        try:\n            return fn()\n        except Exception:\n            continue",
    "def percent(part, whole):\n    return round(part / whole * 100, 2)",
    ("def flatten(nested):\n    out = []\n    for x in nested:\n        if type(x) == list:\n"
    "            out += flatten(x)\n        else:\n            out.append(x)\n    return out"),
    ("def load_rows(path):\n    import csv\n    rows = list(csv.reader(open(path)))\n    header = rows[0]\n"
    "    return [dict(zip(header, r)) for r in rows[1:]]"),
]


def prompts(n: int) -> list[list[dict[str, str]]]:
    """`n` chats: the instructions and the code reviews interleaved, so any prefix mixes both kinds."""
    reviews = []
    for i, code in enumerate(CODE):
        ask = "Review this function for bugs and style." if i % 2 else "What would you change in this code, and why?"
        chat = [{"role": "user", "content": f"{ask}\n\n```python\n{code}\n```"}]
        reviews.append([{"role": "system", "content": REVIEWER}, *chat] if i % 3 == 0 else chat)
    general = [[{"role": "user", "content": text}] for text in INSTRUCTIONS]
    mixed = [chat for pair in zip(general, reviews) for chat in pair] + general[len(reviews):]
    return mixed[:n]


def run(backend: Any, chats: list[list[dict[str, str]]], batch_size: int, params: Any,
        state: dict[str, Any], key: str) -> dict[str, Any]:
    """Generate every answer `batch_size` at a time; wall time, tokens and the padding the batches computed.

    The chats go to `backend.generate` one batch per call, in the order the backend itself would batch them
    (longest prompt first), so each call is exactly one of the batches a whole-list call would make; the run's
    wall time is the sum of the calls'. Each finished call is saved in `state`, so a run that is killed
    (shared machines) resumes where it stopped.
    """
    backend.batch_size = batch_size
    order = sorted(range(len(chats)), key=lambda i: -len(backend.encode(chats[i])))
    done = state.setdefault(key, {})
    real = backend.generate_ids
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        if str(start) in done:
            continue
        rows: list[list[int]] = []

        def counted(ps: list[list[int]], p: Any, rows: list[list[int]] = rows) -> list[list[int]]:
            out = real(ps, p)
            rows.extend(out)
            return out

        backend.generate_ids = counted
        try:
            started = time.perf_counter()
            results = backend.generate([chats[i] for i in batch], params)
            wall = time.perf_counter() - started
        finally:
            del backend.generate_ids  # back to the class's method
        widths = [len(backend.encode(chats[i])) for i in batch]
        done[str(start)] = {"indices": batch, "wall": wall, "texts": [g.text for g in results],
                            "tokens": sum(g.completion_tokens for g in results),
                            "stops": sum(g.finish_reason == "stop" for g in results),
                            "computed": len(batch) * (max(widths) + max(len(r) for r in rows)),  # positions, padded
                            "real": sum(widths) + sum(len(r) for r in rows), "load": os.getloadavg()[0]}
        save_state(state)
    calls = list(done.values())
    texts = [""] * len(chats)
    for call in calls:
        for i, text in zip(call["indices"], call["texts"]):
            texts[i] = text
    wall, tokens = sum(c["wall"] for c in calls), sum(c["tokens"] for c in calls)
    return {"batch": batch_size, "wall": wall, "tokens": tokens, "tps": tokens / wall, "texts": texts,
            "stops": sum(c["stops"] for c in calls),
            "padding": 1 - sum(c["real"] for c in calls) / sum(c["computed"] for c in calls),
            "load": max(c["load"] for c in calls)}  # other processes on the cores slow a run down: shown beside it


STATE = Path(os.environ.get("TMPDIR", "/tmp")) / "adhere-eval-bench-state.json"


def load_state(settings: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """The batches finished by an earlier, interrupted run with the same settings and the same code and model."""
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        state = {}
    if fresh or state.get("settings") != settings:
        state = {"settings": settings}
    return state


def save_state(state: dict[str, Any]) -> None:
    STATE.with_suffix(".tmp").write_text(json.dumps(state))
    STATE.with_suffix(".tmp").replace(STATE)


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    """One at a time, each batch size, then bf16 autocast at the best batch size; with the facts of the run."""
    import torch

    from adhere.generation import GenerationParams, LocalBackend
    from adhere.generation.local import files_fingerprint
    from adhere.models.embedded import ensure_embedded_model

    folder = ensure_embedded_model()
    backend = LocalBackend.load(folder, device="cpu")
    chats = prompts(args.prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    code = [Path(__file__), *sorted((ROOT / "src" / "adhere" / "generation").glob("*.py"))]
    settings = {"n": len(chats), "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
                "model": files_fingerprint([folder]), "code": files_fingerprint(code)}
    state = load_state(settings, args.fresh)
    backend.generate(chats[:2], GenerationParams(max_new_tokens=4))  # warm-up: first-call allocations, lazy init
    facts = {"threads": torch.get_num_threads(), "load_before": os.getloadavg()[0], "n": len(chats),
             "max_new_tokens": args.max_new_tokens, "prompt_tokens": sorted(len(backend.encode(c)) for c in chats),
             "resumed": sum(len(v) for k, v in state.items() if k != "settings")}
    rows = []
    for batch_size in [1, *args.batch_sizes]:
        rows.append(run(backend, chats, batch_size, params, state, f"float32-{batch_size}"))
        print(f"batch {batch_size}: {rows[-1]['tps']:.1f} tokens/s, {rows[-1]['wall']:.1f} s", flush=True)
    bf16 = None
    if not args.no_bf16:
        best = max(rows[1:], key=lambda r: r["tps"])
        autocast = LocalBackend(backend.model, backend.tokenizer, name=backend.name, weights_id="bench",
                                precision="bfloat16")
        autocast.generate(chats[:2], GenerationParams(max_new_tokens=4))
        bf16 = run(autocast, chats, best["batch"], params, state, f"bf16-{best['batch']}")
        bf16["changed"] = sum(a != b for a, b in zip(bf16["texts"], best["texts"]))
        print(f"bf16 autocast, batch {best['batch']}: {bf16['tps']:.1f} tokens/s", flush=True)
    facts["load_after"] = os.getloadavg()[0]
    facts["rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return rows, bf16, facts


def report(rows: list[dict[str, Any]], bf16: dict[str, Any] | None, facts: dict[str, Any]) -> str:
    """The markdown table and the verdict."""
    single, batched = rows[0], rows[1:]
    best = max(batched, key=lambda r: r["tps"])
    n = facts["n"]
    header = ("| mode | batch | wall time | generated tokens | tokens / s | vs one at a time | padding share "
              "| peak load | answers differing from one at a time |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        differ = sum(a != b for a, b in zip(row["texts"], single["texts"]))
        mode = "one at a time" if row is single else "batched" + (" (headline)" if row is best else "")
        lines.append(f"| {mode} | {row['batch']} | {row['wall']:.1f} s | {row['tokens']:,} | {row['tps']:.1f} "
                     f"| {row['tps'] / single['tps']:.2f}x | {row['padding']:.1%} | {row['load']:.1f} | {differ} / {n} |")
    if bf16 is not None:
        lines.append(f"| batched, bf16 autocast | {bf16['batch']} | {bf16['wall']:.1f} s | {bf16['tokens']:,} "
                     f"| {bf16['tps']:.1f} | {bf16['tps'] / single['tps']:.2f}x | {bf16['padding']:.1%} | {bf16['load']:.1f} "
                     f"| {bf16['changed']} / {n} changed vs float32 batch {bf16['batch']} |")
    ratio = best["tps"] / single["tps"]
    lengths = facts["prompt_tokens"]
    median = lengths[len(lengths) // 2]
    lines += [
        "",
        f"- batched / one at a time: {ratio:.2f}x at batch {best['batch']} (target >= 4x): "
        + ("met." if ratio >= 4 else "not met."),
        f"- {n} prompts of {lengths[0]}-{lengths[-1]} tokens (median {median}) with the chat template; "
        + f"{single['stops']} of {n} answers ended at `<|im_end|>` within {facts['max_new_tokens']} tokens "
        + "one at a time, the rest were cut ('length').",
        "- padding share: of the positions the batches computed (prompt width plus decoding steps, per row), "
        + "those that were left padding or came after a row's end of turn.",
        f"- load: 1-minute load average {facts['load_before']:.2f} before the first run; 'peak load' is its "
        + "highest value at the end of any batch of that run (this process counts about 1-2 of it; more means "
        + f"other processes shared the {os.cpu_count()} cores and slowed that run). Peak RSS {facts['rss_gib']:.2f} GiB"
        + (f"; {facts['resumed']} batches were restored from an interrupted run." if facts["resumed"] else "."),
    ]
    if bf16 is not None:
        verdict = "faster" if bf16["tps"] > best["tps"] else "slower"
        lines.append(f"- bf16 autocast: {bf16['tps'] / best['tps']:.2f}x float32's speed ({verdict}), "
                     f"{bf16['changed']} of {n} greedy answers changed; `LocalBackend` keeps float32 on CPU.")
    return "\n".join(lines)


def cpu_description() -> str:
    from adhere import hardware

    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else ""
    return f"{name or platform.machine()}, {'with' if hardware.cpu_supports_bf16() else 'without'} AVX-512 BF16/AMX"


def write_docs(table: str, facts: dict[str, Any]) -> None:
    """Put the table between BEGIN and END under HEADING at the end of docs/benchmarks.md."""
    import torch
    import transformers

    command = " ".join([".venv/bin/python bench/eval_bench.py", *sys.argv[1:]])
    intro = (
        f"`{command}` on {datetime.date.today().isoformat()}: {os.cpu_count()} CPU cores ({cpu_description()}), "
        f"torch {torch.__version__} ({facts['threads']} threads), transformers {transformers.__version__}. "
        f"SmolLM2-135M-Instruct (embedded, float32), greedy, up to {facts['max_new_tokens']} new tokens for each of "
        f"{facts['n']} prompts (instructions and code reviews, in the script) through `LocalBackend`: length-sorted, "
        "left-padded batches with the KV cache. Tokens/s is generated tokens over the wall time of the run (the sum "
        "of its batches' `generate` calls, longest prompts first, as one whole-list call batches them)."
    )
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    block = f"{BEGIN}\n{intro}\n\n{table}\n{END}"
    if BEGIN in text:
        start = text.index(BEGIN)
        text = text[:start] + block + text[text.index(END, start) + len(END):]
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help=f"how many prompts (at most {len(INSTRUCTIONS) + len(CODE)})")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast run")
    parser.add_argument("--no-docs", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    parser.add_argument("--fresh", action="store_true", help="ignore the batches saved by an interrupted run")
    args = parser.parse_args()
    rows, bf16, facts = measure(args)
    table = report(rows, bf16, facts)
    print(table)
    if not args.no_docs:
        write_docs(table, facts)


if __name__ == "__main__":
    main()
