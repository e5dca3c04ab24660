"""Answers from a local Hugging Face causal LM: the base model, base + a LoRA adapter, or a merged folder.

    from adhere.generation import GenerationParams, LocalBackend
    backend = LocalBackend.load(config.model)                                   # the base model
    backend = LocalBackend.load(config.model, adapter="workdir/train/adapter")  # base + what `adhere train` wrote
    backend = LocalBackend.load("workdir/export")                               # a merged or full model folder
    answers = backend.generate(chats, GenerationParams(max_new_tokens=256))

Prompts are rendered with the tokenizer's own chat template exactly as training renders them
(`adhere.models.masking`): the adapter folder's tokenizer when it has one, with the generation
prompt. They are sorted by length and generated `batch_size` at a time, left-padded, with the
KV cache, greedy at temperature 0; each answer stops at the template's end-of-turn token or eos.
Settings GenerationParams does not name (a repetition_penalty in the model's generation_config.json)
apply as the model's author set them, as vLLM does; that file is part of the backend's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

from adhere.errors import UserError
from adhere.generation.backend import Generation, GenerationParams, Progress, check_chats
from adhere.generation.sampling import seeded_sampler
from adhere.models.config import ModelConfig

Precision = Literal["auto", "float32", "bfloat16"]
# Called after every decoding step with each row's newest token; returns, per row, whether it has ended.
StepHook = Callable[[list[int]], list[bool]]
# Files whose names, sizes and mtimes make a model's identity: weights, config and tokenizer.
IDENTITY_SUFFIXES = (".safetensors", ".gguf", ".json", ".jinja", ".model", ".txt")


class LocalBackend:
    """A loaded model and tokenizer that answer chats in length-sorted, left-padded batches."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, weights_id: str, batch_size: int = 8,
                 precision: Precision = "auto") -> None:
        """Wrap a model already loaded (eval mode); `weights_id` must change whenever its weights do."""
        if not tokenizer.chat_template:
            raise UserError(f"{name}: the tokenizer has no chat template; set model.chat_template")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.bf16_autocast = _use_bf16_autocast(precision, model, self.device.type)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.max_positions = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        numerics = f"{self.device.type}:{'bf16-autocast' if self.bf16_autocast else next(model.parameters()).dtype}"
        self.identity = "local:" + identity_digest(
            [weights_id, tokenizer.chat_template, sorted(self.stop_ids), numerics])
        if self.device.type == "cpu":
            _limit_threads()

    @classmethod
    def load(cls, model: ModelConfig | str | Path, adapter: str | Path | None = None, *, batch_size: int = 8,
             device: str | None = None, precision: Precision = "auto") -> LocalBackend:
        """Load the base model (a ModelConfig, or a folder / .gguf / hub id), and merge `adapter` into it if given."""
        from adhere.generation.weights import with_adapter
        from adhere.models import load_model

        cfg = model if isinstance(model, ModelConfig) else ModelConfig(base=str(model))
        adapter_dir = Path(adapter).expanduser().resolve() if adapter is not None else None
        if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
            raise UserError(
                f"{adapter_dir}: not a LoRA adapter folder (no adapter_config.json); give the adapter/ folder "
                "that `adhere train` wrote, or load a merged or full model folder as the model itself"
            )
        loaded = load_model(cfg, device=device)
        net, tokenizer, name = loaded.model, loaded.tokenizer, f"local:{loaded.source}"
        paths = [Path(loaded.source)]
        if adapter_dir is not None:
            net, tokenizer = with_adapter(net, tokenizer, adapter_dir, cfg.base)
            name, paths = f"{name} + adapter:{adapter_dir}", [*paths, adapter_dir]
        revision = f"@{cfg.revision}" if cfg.revision else ""  # a hub id downloaded at run time has no files yet
        return cls(net, tokenizer, name=name, weights_id=files_fingerprint(paths) + revision, batch_size=batch_size,
                   precision=precision)

    def generate(
        self, chats: list[list[dict[str, Any]]], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        """One Generation per chat, in input order; `progress` is called after each batch for its chats."""
        prompts = [self.encode(chat, i) for i, chat in enumerate(check_chats(chats))]
        results: list[Generation | None] = [None] * len(prompts)
        # Longest first: similar lengths share a batch (less padding), and a batch too big for memory fails first.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        fits = [i for i in order if len(prompts[i]) < self.max_positions]
        for i in (i for i in order if len(prompts[i]) >= self.max_positions):
            results[i] = Generation("", "error", len(prompts[i]), 0, error=(
                f"the prompt is {len(prompts[i])} tokens; {self.name} reads at most {self.max_positions}: "
                "shorten it, or use a model with a longer context"))
            if progress is not None:
                progress(i, results[i])
        for start in range(0, len(fits), self.batch_size):
            batch = fits[start:start + self.batch_size]
            for i, generation in zip(batch, self._generate_batch([prompts[i] for i in batch], params)):
                results[i] = generation
                if progress is not None:
                    progress(i, generation)
        return results  # type: ignore[return-value]  # every slot was filled above

    def encode(self, chat: list[dict[str, str]], index: int = 0) -> list[int]:
        """Token ids of `chat` with the generation prompt, rendered as training renders (adhere.models.masking)."""
        return prompt_ids(self.tokenizer, chat, f"chats[{index}]: the chat template of {self.name}")

    def _generate_batch(self, prompts: list[list[int]], params: GenerationParams) -> list[Generation]:
        """Generate for prompts of any lengths; a batch that runs out of memory is split in two and retried."""
        import torch

        started = time.perf_counter()
        try:
            rows = self.generate_ids(prompts, params)
        except (torch.OutOfMemoryError, MemoryError):
            if len(prompts) == 1:
                return [Generation("", "error", len(prompts[0]), 0, seconds=time.perf_counter() - started,
                                   error=f"out of memory generating for a prompt of {len(prompts[0])} tokens")]
            half = len(prompts) // 2
            return self._generate_batch(prompts[:half], params) + self._generate_batch(prompts[half:], params)
        seconds = time.perf_counter() - started
        return [self.finish(prompt, row, seconds) for prompt, row in zip(prompts, rows)]

    def generate_ids(self, prompts: list[list[int]], params: GenerationParams,
                     on_step: StepHook | None = None, seeds: list[int] | None = None, repeats: int = 1) -> list[list[int]]:
        """The new token ids of each prompt (up to and including its stop token), from one left-padded generate call.

        `on_step` is the hook the server drives this batching with: after every decoding step it gets
        each row's newest token and returns which rows have ended (it streams text, and ends rows on
        stop sequences, deadlines and clients leaving); the call returns once every row has ended.
        `seeds`, one per row, replaces the seed drawn from (params.seed, the row's prompt) when sampling.
        With `repeats` each prompt is answered that many times (rows prompt by prompt, as `prompts` repeated):
        the prompts are read once and their KV cache copied to each row (GRPO's group of answers to one
        prompt), which saves reading the prompt again per answer (3.7 of 4.8 s for 2 code-review prompts x 4).
        """
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            StoppingCriteriaList,
        )

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(prompt):] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt):] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16_autocast else nullcontext()
        cache = None
        if repeats > 1 and width > 1:
            with torch.inference_mode(), autocast:
                cache = self._prefill(input_ids[:, :-1], attention_mask[:, :-1])
            cache.batch_repeat_interleave(repeats)
        if repeats > 1:
            prompts = [p for p in prompts for _ in range(repeats)]
            input_ids, attention_mask = input_ids.repeat_interleave(repeats, 0), attention_mask.repeat_interleave(repeats, 0)
        config = GenerationConfig(
            max_new_tokens=max(1, min(params.max_new_tokens, self.max_positions - width)), do_sample=False, num_beams=1,
            eos_token_id=sorted(self.stop_ids), pad_token_id=self.pad_id, use_cache=True,
        )
        # Sampling is done by our processor (one seeded generator per row); generate then takes its only choice.
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(seeded_sampler(prompts, params, self.device, seeds))
        stopping = StoppingCriteriaList([_step_criteria(on_step)]) if on_step is not None else None
        with torch.inference_mode(), autocast:
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                      logits_processor=processors, stopping_criteria=stopping,
                                      **({"cache": cache} if cache is not None else {}))
        rows = out[:, width:].tolist()
        # A finished row is filled with pad tokens until the batch's last row finishes: cut after its stop token.
        return [row[: next((k + 1 for k, t in enumerate(row) if t in self.stop_ids), len(row))] for row in rows]

    def _prefill(self, input_ids: Any, attention_mask: Any) -> Any:
        """The KV cache of left-padded prompts, at the positions generate gives them (counted from each row's first
        real token: transformers' `_prepare_position_ids_for_generation`)."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=True).cache

    def finish(self, prompt: list[int], new: list[int], seconds: float = 0.0) -> Generation:
        """Cut a row at its first stop token ('stop'); a row without one ran out of tokens ('length')."""
        stop = next((k for k, token in enumerate(new) if token in self.stop_ids), None)
        kept = new if stop is None else new[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        completion = len(new) if stop is None else stop + 1  # the end-of-turn token was generated too
        return Generation(text, "length" if stop is None else "stop", len(prompt), completion, seconds=seconds)


def _step_criteria(on_step: StepHook) -> Any:
    """A transformers StoppingCriteria that hands each row's newest token to `on_step` and ends the rows it says."""
    import torch
    from transformers import StoppingCriteria

    class StepCriteria(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            ended = on_step(input_ids[:, -1].tolist())
            return torch.tensor(ended, dtype=torch.bool, device=input_ids.device)

    return StepCriteria()


def stop_token_ids(tokenizer: Any, model: Any) -> set[int]:
    """eos (the tokenizer's and the model's generation config's) plus the chat template's end-of-turn token."""
    return chat_stop_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))


def prompt_ids(tokenizer: Any, chat: list[dict[str, str]], who: str) -> list[int]:
    """Token ids of `chat` with the generation prompt, as training renders it; UserError naming `who` if refused."""
    from jinja2 import TemplateError

    try:
        encoding = tokenizer.apply_chat_template(
            chat, tokenize=True, return_dict=True, add_generation_prompt=True,
            sanitize_control_tokens=True,  # as in training: a quoted "<|im_end|>" in a prompt is text
        )
    except TemplateError as exc:
        raise UserError(f"{who} rejected it: {exc}") from None
    return list(encoding["input_ids"])


def chat_stop_ids(tokenizer: Any, eos: int | list[int] | None) -> set[int]:
    """The tokenizer's eos, `eos` (a generation config's) and the chat template's end-of-turn token.

    The end of turn is the token the loss mask trains last (`adhere.models.masking.end_of_turn_token`):
    `<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3, `<end_of_turn>` for Gemma.
    """
    from adhere.models.masking import end_of_turn_token

    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, eos, end_of_turn_token(tokenizer)):
        ids.update(value if isinstance(value, list) else [] if value is None else [value])
    return ids


def files_fingerprint(paths: list[Path]) -> str:
    """A hash of the names, sizes and modification times of the model files in `paths` (folders or files).

    Stat, not content: hashing SmolLM2-135M's 0.54 GB would take ~1 s per load, a 7B model's 15 GB
    ~30 s. A copied or re-saved folder gets new mtimes, so it misses the cache: safe, never stale.
    """
    entries: list[list[Any]] = []
    for path in paths:
        entries.append([str(path.resolve()) if path.exists() else str(path)])  # a hub id not downloaded yet
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and file.suffix in IDENTITY_SUFFIXES:
                stat = file.stat()  # follows the symlinks of a hub cache snapshot to the blobs
                entries.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return identity_digest(entries)


def identity_digest(value: Any) -> str:
    """A short stable hash of a JSON-able value: the part of a backend identity that names its weights and settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _use_bf16_autocast(precision: Precision, model: Any, device_type: str) -> bool:
    """bf16 autocast over float32 weights: asked for, or 'auto' on a CUDA GPU with bf16; never 'auto' on CPU.

    On CUDA, load_model's 'auto' dtype already loads bf16 weights; autocast covers a float32 load. On CPU,
    decoding reads every weight once per token: autocast re-casts the float32 weights on each step, and
    bf16 weights need native bf16 math to pay off. Not yet measured for generation: the table in
    docs/benchmarks.md was run with `bench/eval_bench.py --no-bf16`; without that flag the script also
    times bf16 autocast and counts the greedy answers it changes.
    """
    import torch

    if precision == "float32" or next(model.parameters()).dtype != torch.float32:
        return False
    if precision == "bfloat16":
        return True
    from adhere import hardware

    return device_type == "cuda" and hardware.bf16_available("cuda")


def _limit_threads() -> None:
    """Use no more torch threads than the CPUs this process may run on (affinity and cgroup quota).

    torch starts one thread per physical core of the host; in a container with a 2-CPU quota on a
    64-core host the extra threads only wait for each other. OMP_NUM_THREADS, when set, wins.
    """
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            usable = min(usable, max(1, int(int(quota) / int(period) + 0.5)))
    except (OSError, ValueError):
        pass
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
