"""The one exception type for problems a user can fix.

The CLI prints a `UserError` as one clear message, without a traceback (unless
`--debug`), and exits with code 2. Everything else is a bug in adhere and keeps
its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input: a config key, a file, a line, a model reference.

    The message names what is wrong (the file, line or key path), what was
    expected, and what to do about it.
    """
