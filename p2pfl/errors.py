"""Errors a user can act on: the CLI prints them as one line, with no traceback."""


class UserError(Exception):
    """Bad input or environment; the message names the problem and the fix."""

    exit_code = 2


class PeerUnreachable(UserError):
    """A neighbour never answered within the startup deadline."""

    exit_code = 3


class Diverged(UserError):
    """An agent's loss or parameters became non-finite or exploded; the run cannot recover."""

    exit_code = 4


class WireError(ValueError):
    """An inbound message failed validation; it is dropped and counted, never raised to the user."""
