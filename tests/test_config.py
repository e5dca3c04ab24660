"""The project config: typed sections, errors that name file, line and key, overrides."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from adhere.config import json_schema, load_config, set_override
from adhere.errors import UserError

MINIMAL = "name: proj\n"


def write(tmp_path: Path, text: str, name: str = "adhere.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_minimal_config_fills_defaults_and_resolves_workdir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.workdir == str(tmp_path / "runs" / "proj")
    assert config.model.base == "smollm2-135m-instruct"
    assert config.train.lora.r == 16 and config.train.method == "lora"
    assert config.stage_dir("train") == tmp_path / "runs" / "proj" / "train"


def test_wrong_type_names_key_path_line_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "name: proj\ntrain:\n  lora:\n    r: sixteen\n")
    assert error_of(path) == f'{path}:4: train.lora.r: expected a positive integer, got "sixteen"'


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: proj\ntrain:\n  methd: full\n"))
    assert ":3: train.methd: unknown key; did you mean 'method'?" in message
    assert "valid keys here: method, lora, lr" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "name: proj\ntrain:\n  lr: -1\n  schedule: cosin\nserve:\n  port: 70000\n"
    lines = error_of(write(tmp_path, text)).splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("train.lr: expected a positive number, got -1")
    assert lines[1].endswith("""train.schedule: expected 'cosine', 'linear' or 'constant', got "cosin\"""")
    assert lines[2].endswith("serve.port: expected a TCP port from 1 to 65535, got 70000")


def test_no_silent_coercion(tmp_path: Path) -> None:
    assert 'train.batch_size: expected a positive integer, got "8"' in error_of(
        write(tmp_path, "name: proj\ntrain: {batch_size: '8'}\n")
    )
    assert "train.batch_size: expected a positive integer, got true" in error_of(
        write(tmp_path, "name: proj\ntrain: {batch_size: true}\n")
    )


def test_yaml_1_1_exponent_floats_are_numbers(tmp_path: Path) -> None:
    # PyYAML alone reads `2e-4` as a string; learning rates are written that way.
    assert load_config(write(tmp_path, "name: proj\ntrain: {lr: 2e-4}\n")).train.lr == pytest.approx(2e-4)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: proj\ntrain:\n  lr: [1\n  seed: 2\n"))
    assert message.startswith(f"{tmp_path / 'adhere.yaml'}:4: not valid YAML")


def test_missing_file_and_missing_name(tmp_path: Path) -> None:
    assert "no such config file" in error_of(tmp_path / "nope.yaml")
    assert "name: required key is missing" in error_of(write(tmp_path, "train: {lr: 0.1}\n"))
    assert "name: expected letters" in error_of(write(tmp_path, "name: 'my project'\n"))


def test_cross_field_lora_with_full(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: proj\ntrain:\n  method: full\n  lora: {r: 8}\n"))
    assert "train.lora: train.lora is set but train.method is 'full'" in message


def test_cross_field_no_validation_split_with_evaluations_during_training(tmp_path: Path) -> None:
    path = write(tmp_path, "name: proj\ndata:\n  validation_fraction: 0\ntrain:\n  eval_every: 10\n")
    message = error_of(path)
    assert "adhere.yaml:3: data.validation_fraction: is 0, but train.eval_every is set" in message
    assert load_config(path, ["data.validation_fraction=0.1"]).data.validation_fraction == 0.1
    assert load_config(path, ["data.validation_fraction=null"]).data.validation_fraction is None  # auto: 5%
    assert load_config(path, ["train.eval_every=null"]).data.validation_fraction == 0


def test_unknown_constraint_id(tmp_path: Path) -> None:
    text = "name: proj\nspec:\n  constraints:\n    - {id: max_words, n: 10}\n    - {id: max_word, n: 5}\n"
    message = error_of(write(tmp_path, text))
    assert ":5: spec.constraints[1].id: unknown constraint 'max_word'; did you mean 'max_words'?" in message


def test_constraint_arguments_are_checked_by_key(tmp_path: Path) -> None:
    base = "name: proj\nspec:\n  constraints:\n"
    assert 'spec.constraints[0].n: expected an integer, got "ten"' in error_of(
        write(tmp_path, base + "    - {id: max_words, n: ten}\n")
    )
    assert "spec.constraints[0].n: required key is missing" in error_of(write(tmp_path, base + "    - {id: max_words}\n"))
    message = error_of(write(tmp_path, base + "    - {id: lowercase, strict: true}\n"))
    assert "spec.constraints[0].strict: lowercase takes no argument 'strict'" in message


def test_json_schema_constraint_takes_the_output_schema(tmp_path: Path) -> None:
    text = (
        "name: proj\nspec:\n  output:\n    format: json\n    schema: {type: object, required: [a]}\n"
        "  constraints:\n    - {id: json_schema}\n"
    )
    config = load_config(write(tmp_path, text))
    constraint = config.spec.constraints[0]
    assert constraint.args["schema"] == {"type": "object", "required": ["a"]}
    assert constraint.check('{"a": 1}') and not constraint.check('{"b": 1}')
    message = error_of(write(tmp_path, "name: proj\nspec:\n  constraints:\n    - {id: json_schema}\n"))
    assert "spec.constraints[0]: json_schema needs a schema" in message


def test_invalid_json_schema_names_the_key_inside_it(tmp_path: Path) -> None:
    text = "name: proj\nspec:\n  output:\n    format: json\n    schema:\n      properties:\n        line: {type: integr}\n"
    message = error_of(write(tmp_path, text))
    assert ":7: spec.output.schema.properties.line.type: invalid JSON Schema" in message


def test_schema_from_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "out.json").write_text(json.dumps({"type": "object"}))
    text = "name: proj\nspec:\n  output: {format: json, schema: schemas/out.json}\n"
    assert load_config(write(tmp_path, text)).spec.output.schema_ == {"type": "object"}
    missing = "name: proj\nspec:\n  output: {format: json, schema: schemas/missing.json}\n"
    assert "spec.output.schema: schema file" in error_of(write(tmp_path, missing))
    text_format = "name: proj\nspec:\n  output: {format: text, schema: {type: object}}\n"
    assert "spec.output.format: output.schema is set, so output.format must be 'json'" in error_of(
        write(tmp_path, text_format)
    )


def test_rubric_needs_every_score(tmp_path: Path) -> None:
    text = "name: proj\nspec:\n  rubric:\n    - {name: x, description: y, scores: {1: a, 2: b, 5: e}}\n"
    assert "spec.rubric[0].scores: expected one description for each score 1-5; missing [3, 4]" in error_of(
        write(tmp_path, text)
    )


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "name: proj\nspec:\n  constraints:\n    - {id: max_words, n: 10}\n")
    config = load_config(path, ["train.lr=1e-3", "train.lora.r=4", "spec.constraints[0].n=20", "model.revision=main"])
    assert config.train.lr == pytest.approx(1e-3) and config.train.lora.r == 4
    assert config.spec.constraints[0].args == {"n": 20} and config.model.revision == "main"
    assert "(--set): train.lora.r: expected a positive integer, got 0" in error_of(path, ("train.lora.r=0",))
    assert "--set expects KEY=VALUE" in error_of(path, ("train.lr",))
    assert "spec.constraints has no item 3" in error_of(path, ("spec.constraints[3].n=1",))


def test_override_null_restores_default() -> None:
    data = {"train": {"lr": 0.5}}
    assert set_override(data, "train.lr=null") == ("train", "lr")
    assert data == {"train": {}}


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    text = (
        "name: proj\nspec:\n  output: {format: json, schema: {type: object}}\n"
        "  constraints: [{id: json_schema}, {id: max_words, n: 5}]\n"
        "data:\n  sources: [{path: d/x.jsonl}]\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.data.sources[0].path == str(tmp_path / "d" / "x.jsonl")
    resolved = tmp_path / "elsewhere" / "config.yaml"
    resolved.parent.mkdir()
    resolved.write_text(config.to_yaml())
    assert load_config(resolved) == config


def test_init_template_is_valid_and_matches_the_json_schema(tmp_path: Path) -> None:
    template = resources.files("adhere").joinpath("init_template.yaml").read_text().replace("{name}", "demo")
    config = load_config(write(tmp_path, template))
    assert config.name == "demo" and [c.id for c in config.spec.constraints] == [
        "max_words",
        "num_paragraphs",
        "forbidden_words",
    ]
    jsonschema.validate(yaml.safe_load(template), json_schema())


def test_json_schema_rejects_what_the_config_rejects() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid({"name": "x", "train": {"lora": {"r": "sixteen"}}})
    assert not validator.is_valid({"name": "x", "train": {"methd": "full"}})
    assert not validator.is_valid({"name": "x", "spec": {"constraints": [{"id": "max_word", "n": 3}]}})
    assert not validator.is_valid({"name": "x", "spec": {"constraints": [{"id": "max_words", "n": "three"}]}})
    assert validator.is_valid({"name": "x", "spec": {"constraints": [{"id": "max_words", "n": 3}]}})
