"""Self-Instruct (Wang et al. 2023): new tasks proposed by the teacher from examples of a growing pool.

    synth: {mode: self_instruct, seed_file: seed_tasks.jsonl, target: 200, self_instruct: {rounds: 5, per_round: 20}}

Each round the teacher is shown `demonstrations` example tasks (seeds, plus up to
`generated_demonstrations` tasks kept in earlier rounds) and asked for one new task. A proposal
is kept when it parses, has `min_words`..`max_words` words, holds no blacklisted word, has ROUGE-L
below `similarity` with every instruction in the pool (seeds and kept proposals, this round's
included) and shares no n-gram with an evaluation prompt; it then joins the pool and the teacher
answers it (with the spec's system prompt); an answer is kept when usable and passing the spec.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from adhere.data.records import Rejection
from adhere.synth.context import Context, answer_problem, spec_failures
from adhere.synth.filters import RougePool, blacklisted, word_count
from adhere.synth.seeds import Seed

TASK = re.compile(r"\b(?:new\s+)?task(?:\s*\d+)?\s*:\s*", re.IGNORECASE | re.MULTILINE)
INPUT = re.compile(r"^\s*input\s*:\s*", re.IGNORECASE | re.MULTILINE)
NO_INPUT = {"", "<none>", "none", "n/a", "<noinput>", "no input", "-"}


def proposal_chat(description: str, demos: list[Seed]) -> list[dict[str, str]]:
    """The chat asking the teacher for one new task in the shape of the examples."""
    about = f" ({description})" if description else ""
    lines = [f"Write a new task for an AI assistant{about}. Examples:", ""]
    for demo in demos:
        lines += [f"Task: {demo.instruction}", f"Input: {demo.input or '<none>'}", ""]
    lines += ["Write one new task, different from these, that a text-only assistant can do. Reply in this form only:",
              "Task: <instruction>", "Input: <input, or <none>>"]
    return [{"role": "user", "content": "\n".join(lines)}]


def parse_proposal(text: str) -> tuple[str, str]:
    """(instruction, input) from a proposal; ('', '') when nothing usable is in it."""
    found = TASK.search(text)
    body = text[found.end():] if found else text
    body = TASK.split(body, maxsplit=1)[0]  # a second task in the same answer is ignored
    parts = INPUT.split(body, maxsplit=1)
    instruction = " ".join(parts[0].split())
    given = parts[1].strip() if len(parts) > 1 else ""
    return instruction, "" if given.casefold() in NO_INPUT else given


def generate(ctx: Context, log: Callable[[str], None]) -> None:
    """Rounds of proposals, filters and answers until synth.target records are kept or the rounds run out."""
    cfg = ctx.synth.self_instruct
    pool = RougePool([seed.instruction for seed in ctx.seeds])
    generated: list[Seed] = []
    counts = ctx.stats.setdefault("proposals", {"proposed": 0, "passed_filters": 0, "answered": 0})
    for round_ in range(cfg.rounds):
        if ctx.ledger.full or ctx.teacher.budget.stopped:
            break
        chats = [proposal_chat(ctx.config.spec.description, _demos(ctx, generated, round_, j))
                 for j in range(cfg.per_round)]
        ctx.ledger.add(len(chats))
        counts["proposed"] += len(chats)
        candidates = []
        for j, proposal in enumerate(ctx.teacher.generate(chats, ctx.params())):
            where = {"round": round_, "proposal": j, "text": proposal.text}
            problem = answer_problem(proposal)
            if problem is None:
                instruction, given = parse_proposal(proposal.text)
                problem = _filter(ctx, pool, instruction, given)
            if problem is not None:
                ctx.ledger.drop(problem.rule, problem.reason, where)
                continue
            pool.add(instruction)
            seed = Seed(f"round {round_} proposal {j}", instruction, given)
            generated.append(seed)
            candidates.append(seed)
        counts["passed_filters"] += len(candidates)
        _answer(ctx, candidates, round_)
        log(f"round {round_ + 1}/{cfg.rounds}: {len(candidates)} of {len(chats)} proposals passed the filters; "
            f"{len(ctx.ledger.kept)} records kept")
    ctx.stats["pool_size"] = len(pool.texts)


def _demos(ctx: Context, generated: list[Seed], round_: int, j: int) -> list[Seed]:
    """Seeds and up to generated_demonstrations earlier proposals, drawn from a seed that names this request."""
    cfg = ctx.synth.self_instruct
    rng = random.Random(f"{ctx.synth.seed}:self_instruct:{round_}:{j}")
    machine = rng.sample(generated, min(cfg.generated_demonstrations, len(generated), cfg.demonstrations))
    human = rng.sample(ctx.seeds, min(cfg.demonstrations - len(machine), len(ctx.seeds)))
    demos = human + machine
    rng.shuffle(demos)
    return demos


def _filter(ctx: Context, pool: RougePool, instruction: str, given: str) -> Rejection | None:
    """Self-Instruct's filters, cheapest first; the first that fails names the rule."""
    cfg = ctx.synth.self_instruct
    if not instruction:
        return Rejection("unparseable", "no task found in the teacher's answer")
    words = word_count(f"{instruction} {given}")
    if not cfg.min_words <= words <= cfg.max_words:
        return Rejection("length", f"{words} words; synth.self_instruct keeps {cfg.min_words} to {cfg.max_words}")
    if not instruction[0].isalnum():
        return Rejection("format", f"starts with {instruction[0]!r}, not a letter or digit")
    word = blacklisted(f"{instruction} {given}", cfg.blacklist)
    if word is not None:
        return Rejection("blacklist", f"mentions {word!r}, a task a text model cannot do")
    score, closest = pool.most_similar(instruction, cfg.similarity)
    if score >= cfg.similarity:
        return Rejection("similar", f"ROUGE-L {score:.2f} >= {cfg.similarity} with {closest[:80]!r}")
    return ctx.contaminated(instruction, given)


def _answer(ctx: Context, candidates: list[Seed], round_: int) -> None:
    """The teacher's answers to the kept tasks; usable answers passing the spec become records."""
    params = ctx.params()
    answers = ctx.teacher.generate([ctx.chat(c.prompt) for c in candidates], params)
    for seed, answer in zip(candidates, answers):
        where = {"round": round_, "instruction": seed.instruction, "input": seed.input, "text": answer.text}
        problem = answer_problem(answer) or ctx.contaminated(answer.text)
        failed = spec_failures(ctx.config.spec, answer.text) if problem is None else []
        if failed:
            problem = Rejection("spec_violation", f"the answer fails {', '.join(failed)}")
        if problem is not None:
            ctx.ledger.drop(problem.rule, problem.reason, where)
            continue
        ctx.stats["proposals"]["answered"] += 1
        record = ctx.record("self_instruct", seed.prompt, answer.text, seed, params, round=round_,
                            filters={"similarity_below": ctx.synth.self_instruct.similarity, "spec": "passed",
                                     "decontam": "passed"})
        ctx.ledger.keep(record)
