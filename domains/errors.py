"""One error type for bad input, shared by every layer.

It lives in the lowest layer (``domains``) so that models, tasks and flows can all raise
it. Every instance names the offending field and the fix, and the CLI turns it into a
one-line message with a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class PonderError(Exception):
    """Bad input or environment: says which field is wrong and how to fix it."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        """Pickle by the three fields, so the error crosses process boundaries intact."""
        return (type(self), (self.field, self.problem, self.fix))
