"""Errors of a vertical run that the command line reports in one line (import-light: no Ray, no TenSEAL)."""
from __future__ import annotations


class VerticalPartyError(RuntimeError):
    """A party (or the vertical driver) died, or rejected a message, mid-run.

    The message names the party and the iteration, and says from which checkpoint
    ``fedray resume RUN_DIR`` continues. The CLI exits with code 1 (a fault, not bad input).
    """

    def __init__(self, message: str, party: str = "", iteration: int = 0, checkpoint: int | None = None) -> None:
        super().__init__(message)
        self.party = party
        self.iteration = iteration
        self.checkpoint = checkpoint
