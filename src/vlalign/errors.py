"""The one exception type for a user's mistake.

The CLI turns a :class:`UserError` into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed field, a refused overwrite."""
