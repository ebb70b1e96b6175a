"""Errors a user can cause. The CLI prints them as one message, without a traceback."""


class RobolakeError(Exception):
    """A problem with the user's input (spec, file, argument) and what to do about it."""


class SpecError(RobolakeError):
    """The dataset spec is invalid."""
