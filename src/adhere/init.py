"""`adhere init`: a new project folder that `adhere run` takes through every stage as it is.

    adhere init my-project && adhere run my-project/adhere.yaml

Writes `my-project/adhere.yaml` (the commented template, init_template.yaml) and
`my-project/data/examples.jsonl`: 40 hand-written support answers that meet the
template's spec, to replace with your own rows once the first run has shown
what each stage does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from adhere.errors import UserError

SAMPLE = "data/examples.jsonl"  # where the template's data.sources points


def create(name: str, folder: Path) -> dict[str, Path]:
    """Create `folder` with adhere.yaml and the sample data; return the files written by role.

    An existing non-empty folder is refused: init never overwrites a file.
    """
    from adhere.config import NAME

    if not NAME.match(name):
        raise UserError(f"project name {name!r}: use letters, digits, '.', '_' and '-' only (it names a folder)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; choose another project name, or --dir FOLDER")
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{folder}: already exists and is not empty; adhere init never overwrites files, so choose "
                        "another project name, or --dir for a new or empty folder")
    package = resources.files("adhere")
    template = package.joinpath("init_template.yaml").read_text(encoding="utf-8")
    files = {"config": folder / "adhere.yaml", "data": folder / SAMPLE}
    files["data"].parent.mkdir(parents=True, exist_ok=True)
    files["config"].write_text(template.replace("{name}", name), encoding="utf-8")
    files["data"].write_text(package.joinpath("init_data.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    return files
