"""The ground floor: errors a user can fix. Imports nothing from kerascnn, so every module may
import it (the command line turns these into one line on stderr and exit code 2)."""

from __future__ import annotations

__all__ = ["UserError", "ExportError"]


class UserError(Exception):
    """An error the user can fix; the CLI prints its message and exits with code 2."""


class ExportError(UserError):
    """An export cannot go on; the message names the problem and the fix. Nothing was written."""
