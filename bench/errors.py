"""Errors the harness reports to users."""


class InputError(ValueError):
    """Bad user input (names, parameters, suite files, folders): exit code 2, nothing written.

    The message is one line naming the field and, where there are any, the valid choices.
    """
