"""Errors shown to the user."""


class DriftError(Exception):
    """Base for every user-facing error.

    The message is one line; the CLI prints ``error: <message>`` and exits 1.
    """
