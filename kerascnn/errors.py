"""The ground floor: errors a user can fix. Imports nothing from kerascnn, so every module may
import it (the command line turns these into one line on stderr and exit code 2)."""

from __future__ import annotations

__all__ = ["UserError", "ExportError", "WeightsError"]


class UserError(Exception):
    """An error the user can fix; the CLI prints its message and exits with code 2."""


class ExportError(UserError):
    """An export cannot go on; the message names the problem and the fix. Nothing was written."""


class WeightsError(UserError, ValueError):
    """Unknown, mismatched, damaged or unreachable weights (shipped, or published ImageNet ones);
    the message names the ones that exist or the file and the fix. A ``ValueError`` for library
    callers (as ``get_model``'s other argument errors), a ``UserError`` for the CLI. Re-exported as
    ``kerascnn.weights.WeightsError``; defined here so that the weights' submodules, which that
    package imports, can raise it without importing the package back."""
