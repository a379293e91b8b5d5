"""One error type for bad input, shared by every layer.

It lives in the lowest layer (``domains``) so that models, tasks and flows can all raise
it. Every instance names the offending field and the fix, and the CLI turns it into a
one-line message with a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import re


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


class SafeReason(ValueError):
    """A rejection whose message names only fields, rules and schema words (never a cell's
    value): ``reason_of`` passes it through as it is."""


# a quoted value inside an error message: 'Smith, John' or "Smith, John" (bounded)
_QUOTED = re.compile(r"'[^'\n]{0,400}'|\"[^\"\n]{0,400}\"")


def reason_of(err: BaseException, prefix: str = "") -> str:
    """A quarantine reason that names the field and the rule, never the value: reasons
    reach Prefect artifacts and logs, and a rejected cell may hold a name or an MRN
    (``invalid literal for int(): 'Smith, John'``). Pydantic errors become ``field: rule``
    without their input (``prefix`` leads each field path); any other message has its quoted
    values replaced by ``'…'``."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        errors = err.errors(include_input=False, include_url=False)[:3]
        rules = [_rule(e, prefix) for e in errors]
        return "; ".join(rules)
    if isinstance(err, SafeReason):
        return str(err)[:300]
    if isinstance(err, PonderError):
        return _scrub(f"{err.field}: {err.problem}")
    return _scrub(str(err)) or type(err).__name__


def _rule(error: dict, prefix: str) -> str:
    where = ".".join(str(p) for p in ([prefix] if prefix else []) + list(error["loc"]))
    msg = _scrub(error["msg"]) if error["type"] == "value_error" else error["msg"]
    return f"{where}: {msg}" if where else msg


def _scrub(text: str) -> str:
    return _QUOTED.sub("'…'", text)[:300]
