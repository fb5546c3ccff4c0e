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
    """An inbound message failed validation; it is dropped and counted, never raised to the user.

    `reason` is one of constants.DROP_REASONS and keys the drop counter: a peer's text (a tensor name,
    a tag) only ever reaches the detail, so no peer can grow the counter with keys of its choosing."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Interrupted(KeyboardInterrupt):
    """The launcher got SIGINT or SIGTERM: every agent was stopped; exit 128 + the signal number."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum
