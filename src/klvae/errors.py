"""The library's user-facing exception type and its warnings' base class."""


class KlvaeError(ValueError):
    """A user error: bad input, option or file. Its message is one line naming the fix.

    The CLI prints it without a traceback and exits with code 2.
    """


class KlvaeWarning(UserWarning):
    """Something the user should know that does not stop the work (data left out, a collapsed
    posterior); the CLI prints it as one line."""
