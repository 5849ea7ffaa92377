"""One exception type for every user-facing failure.

Stages catch :class:`UserError` at the top and print its message as a single line (no traceback),
so every message must say *what* is wrong and *where* (file, row, column, or the param to set).
"""


class UserError(Exception):
    """An error caused by the user's input or configuration, reported as one line."""
