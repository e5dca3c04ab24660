"""Feedback on served answers, and feedback exported as the next round's training data.

    curl localhost:8000/v1/feedback -H "Authorization: Bearer $KEY" \\
      -d '{"completion_id": "chatcmpl-...", "rating": "down", "correction": "{\\"summary\\": \\"...\\"}"}'
    adhere feedback export adhere.yaml --out new_data.jsonl

A rating is 'up' or 'down', or a score from 1 to 5 (4-5 approve, 1-2 reject, 3 is neutral); the
latest feedback on a completion is the one that counts. The export writes canonical records
(`{"messages": [...], "meta": {...}}`, a source `adhere data` reads): a correction becomes the
assistant turn, an approved answer is kept as it was served, and a rejected answer without a
correction goes to `<out>.to_label.jsonl` for someone to write the right answer. Every record
carries its lineage: the served model, its run id, the request and the feedback.

    adhere feedback export adhere.yaml --out new_data.jsonl --pairs new_pairs.jsonl

`--pairs` also writes preference pairs (the pair record `data.pairs` reads, format auto): a correction
is chosen over the answer it corrects, and a rejected answer is the rejected side against each approved
answer (approved as served, or a correction) to the same prompt; `meta` names both sides' requests and
feedback.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from adhere import runs
from adhere.serve.monitor import connect
from adhere.serve.protocol import ApiError, FeedbackRequest
from adhere.serve.state import bearer_scheme, require_key, server_state

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

router = APIRouter()

LATEST_FEEDBACK = """
SELECT f.id AS feedback_id, f.created AS feedback_created, f.rating, f.score, f.correction, f.comment,
       r.id AS request_id, r.created, r.model, r.run_id, r.messages, r.response, r.status
FROM feedback f JOIN requests r ON r.id = f.completion_id
WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY completion_id)
ORDER BY f.id
"""


@router.post("/v1/feedback", dependencies=[Depends(require_key), Depends(bearer_scheme)],
             responses={404: {"description": "No completion with that id"}, 400: {"description": "Invalid"}})
async def post_feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
    """Rate a completion (and correct it); answered only once the feedback is on disk."""
    state = server_state(request)
    limit = state.config.serve.max_message_chars
    if body.correction is not None and not body.correction.strip():
        raise ApiError(400, "correction is empty; leave it out, or give the response the model should have given",
                       param="correction")
    if body.correction is not None and len(body.correction) > limit:
        raise ApiError(400, f"correction has {len(body.correction)} characters; the limit is {limit} "
                            "(serve.max_message_chars)", param="correction")
    if not await run_in_threadpool(state.monitor.has_request, body.completion_id):
        raise ApiError(404, f"no completion {body.completion_id!r} in this server's monitor database; "
                            "give the id of a chat completion response", param="completion_id",
                       code="completion_not_found")
    return await run_in_threadpool(state.monitor.add_feedback, body.completion_id, body.rating, body.correction,
                                   body.comment)


def export_feedback(config: ProjectConfig, out: Path, pairs_out: Path | None = None) -> Path:
    """Write feedback as training records to `out`, rejects to label beside it, counts in `<out>.summary.json`;
    with `pairs_out`, preference pairs there too."""
    from adhere.data.records import Rejection, check_messages

    db = config.stage_dir("serve") / "monitor.db"
    conn = connect(db, readonly=True)
    try:
        rows = conn.execute(LATEST_FEEDBACK).fetchall()
    finally:
        conn.close()
    records, to_label, counts = [], [], Counter()
    for row in rows:
        kind, messages, entry = _classify(row)
        counts[kind] += 1
        if kind in ("corrected", "approved"):
            try:
                records.append({"messages": check_messages(messages), "meta": entry["meta"]})
            except Rejection:  # a chat `adhere data` would refuse, e.g. one that opens with an assistant turn
                counts[kind] -= 1
                counts["invalid"] += 1
        elif kind == "to_label":
            to_label.append(entry)
    out = _write_jsonl(Path(out), records)
    label_path = _write_jsonl(out.with_name(f"{out.stem}.to_label.jsonl"), to_label)
    summary = {
        "monitor_db": str(db), "feedback": len(rows), "records": len(records), "to_label": len(to_label),
        "counts": dict(sorted(counts.items())), "out": {"path": str(out), "sha256": runs.file_hash(out)},
        "to_label_file": {"path": str(label_path), "sha256": runs.file_hash(label_path)},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if pairs_out is not None:
        pairs, pair_counts = feedback_pairs(rows, str(db))
        summary |= {"pairs": len(pairs), "pair_counts": dict(sorted(pair_counts.items())),
                    "pairs_file": {"path": str(pairs_out), "sha256": runs.file_hash(_write_jsonl(Path(pairs_out), pairs))}}
    runs.write_json_atomic(out.with_name(f"{out.stem}.summary.json"), summary)
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return runs.write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def feedback_pairs(rows: list[Any], source: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Preference pairs from the latest feedback on each completion, with counts by kind.

    'correction': the correction chosen over the served answer it corrects. 'approved_over_rejected': a served
    answer rated down is rejected against each approved answer (rated up, or a correction) to the same prompt.
    Pairs `adhere data` would refuse (identical sides, a chat that opens with the assistant) count as 'invalid'.
    """
    from adhere.data.pair_formats import check_pair
    from adhere.data.records import Rejection

    approved: dict[str, list[tuple[str, Any, str]]] = {}
    candidates, downs = [], []
    for row in rows:
        if row["messages"] is None:
            continue  # stored as hashes only: no prompt to pair
        prompt, _ = _prompt_and_meta(row)
        key = json.dumps(prompt, sort_keys=True)
        served = row["response"] if row["status"] == 200 and (row["response"] or "").strip() else None
        if row["correction"]:
            approved.setdefault(key, []).append((row["correction"], row, "corrected"))
            if served:
                candidates.append(("correction", prompt, (row["correction"], row, "corrected"), (served, row)))
        elif row["rating"] == "up" and served:
            approved.setdefault(key, []).append((served, row, "approved"))
        elif row["rating"] == "down" and served:
            downs.append((key, prompt, served, row))
    for key, prompt, served, row in downs:
        candidates += [("approved_over_rejected", prompt, chosen, (served, row)) for chosen in approved.get(key, [])]
    pairs, counts, seen = [], Counter(), set()
    for kind, prompt, (good, good_row, good_kind), (bad, bad_row) in candidates:
        try:
            messages = check_pair(prompt, {"role": "assistant", "content": good}, {"role": "assistant", "content": bad})
        except Rejection:
            counts["invalid"] += 1
            continue
        if (key := json.dumps([messages, good, bad])) in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        counts[kind] += 1
        pairs.append({"messages": messages, "chosen": {"role": "assistant", "content": good},
                      "rejected": {"role": "assistant", "content": bad}, "meta": _pair_meta(kind, good_row, good_kind, bad_row, source)})
    return pairs, counts


def _pair_meta(kind: str, good: Any, good_kind: str, bad: Any, source: str) -> dict[str, Any]:
    """A pair's lineage: both sides' requests and feedback, the served model and run."""
    side = lambda row: {"request_id": row["request_id"], "feedback_id": row["feedback_id"],  # noqa: E731
                        "rating": row["rating"], "score": row["score"]}
    pair_id = f"feedback-{good['feedback_id']}" + ("" if good is bad else f"-over-{bad['feedback_id']}")
    return {"id": pair_id, "source": source, "origin": "feedback", "kind": kind, "served_model": bad["model"],
            "run_id": bad["run_id"], "chosen_from": {**side(good), "kind": good_kind}, "rejected_from": side(bad)}


def _classify(row: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """What one feedback row becomes: 'corrected', 'approved', 'to_label', 'not_used' (neutral, or approving a
    failed request) or 'no_prompt' (stored as hashes only); with the chat and the entry to write."""
    if row["messages"] is None:  # serve.store_prompts: hash, or a request refused before it was read
        return "no_prompt", [], {}
    prompt, meta = _prompt_and_meta(row)
    if row["correction"]:
        return "corrected", [*prompt, {"role": "assistant", "content": row["correction"]}], {"meta": {**meta, "kind": "corrected"}}
    if row["rating"] == "up" and row["status"] == 200 and (row["response"] or "").strip():
        return "approved", [*prompt, {"role": "assistant", "content": row["response"]}], {"meta": {**meta, "kind": "approved"}}
    if row["rating"] == "down":
        return "to_label", prompt, {"messages": prompt, "rejected_response": row["response"], "meta": meta}
    return "not_used", prompt, {}


def _prompt_and_meta(row: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A stored request's prompt turns (a 'developer' turn as 'system') and the lineage of its feedback."""
    prompt = [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
              for m in json.loads(row["messages"])]
    meta = {
        "origin": "feedback", "served_model": row["model"], "run_id": row["run_id"], "request_id": row["request_id"],
        "feedback_id": row["feedback_id"], "rating": row["rating"], "score": row["score"],
        "served_at": _iso(row["created"]), "feedback_at": _iso(row["feedback_created"]),
    }
    if row["comment"]:
        meta["comment"] = row["comment"]
    return prompt, meta


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
