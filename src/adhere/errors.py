"""The one exception type for problems a user can fix.

The CLI prints a `UserError` as one clear message, without a traceback (unless
`--debug`), and exits with code 2. Everything else is a bug in adhere and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input: a config key, a file, a line, a model reference.

    The message names what is wrong (the file, line or key path), what was
    expected, and what to do about it.
    """


def require_files(files: dict[str, Path]) -> None:
    """Raise a UserError for the first of `files` (config key -> path) that does not exist.

    Every command reports a missing input the same way: `adhere run`, `adhere data`,
    `adhere synth` and `adhere data inspect` all name the key to fix.
    """
    for key, path in files.items():
        if not path.exists():
            raise UserError(f"no such file or folder ({key}): {path}; create it, or fix the path in adhere.yaml "
                            "(a relative path starts at the folder of adhere.yaml)")
