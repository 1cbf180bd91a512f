"""Errors the user can fix (bad config, data, model path): the CLI prints them in one line, exit 2."""


class InputError(ValueError):
    """A problem with what the user gave us. The message names the field and what is allowed."""


class UnknownName(InputError):
    """A registry lookup missed; the message lists the known names."""
