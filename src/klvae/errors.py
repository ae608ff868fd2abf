"""The library's one user-facing exception type."""


class KlvaeError(ValueError):
    """A user error: bad input, option or file. Its message is one line naming the fix.

    The CLI prints it without a traceback and exits with code 2.
    """
