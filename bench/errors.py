"""Errors the harness reports to users."""


class InputError(ValueError):
    """Bad user input (names, parameters, suite files, folders): exit code 2, nothing written.

    The message is one line naming the field and, where there are any, the valid choices.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a suite or a tuning: the message says what is kept and how to resume
    (exit code 130)."""
