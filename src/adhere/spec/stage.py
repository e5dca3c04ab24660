"""Step 1, define target instructions: validate the spec and write it for later stages.

    adhere spec adhere.yaml
    adhere spec adhere.yaml --response answer.txt   # check one response against it

Writes `workdir/spec/spec.json`: the task, output format, each constraint with
its resolved arguments and a plain-language description, and the rubric.
Data curation, evaluation and the server read the same spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere import runs
from adhere.spec.constraints import describe

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.spec.config import SpecConfig


def run(config: ProjectConfig) -> Path:
    """Write `workdir/spec/` (spec.json, config.yaml, env.json, lineage.json); return the folder."""
    run_dir = runs.start_stage(config, "spec")
    spec_file = runs.write_json_atomic(run_dir / "spec.json", spec_document(config.spec))
    runs.write_lineage(run_dir, config, inputs={}, outputs={"spec": spec_file})
    return run_dir


def spec_document(spec: SpecConfig) -> dict[str, Any]:
    """The spec as JSON, with each constraint described in words."""
    document = spec.model_dump(mode="json")
    document["constraints"] = [
        {"id": c.id, "label": c.label, "description": describe(c.id), "args": c.args} for c in spec.constraints
    ]
    return document


def check_response(spec: SpecConfig, response: str) -> list[tuple[str, bool]]:
    """Each constraint's label and whether `response` meets it, in spec order."""
    return [(c.label, c.check(response)) for c in spec.constraints]
