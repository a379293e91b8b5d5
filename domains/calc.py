"""Exact arithmetic inside reasoning steps: the notation, and a safe evaluator (never eval).

A step writes ``<<140 - (100 + 24)>>``; generation pauses at the closing marker, this module
evaluates the expression, and `` = 16`` is inserted before generation resumes (GSM8K's
calculator annotations, Cobbe et al. 2021). Reference solutions, search, GRPO rollouts,
evaluation and the report all use this one evaluator, so a computed number means the same
thing everywhere. It lives in the lowest layer and imports nothing from ML.

Only numbers, ``+ - * / **``, parentheses and the functions in ``FUNCTIONS`` parse (a
whitelist over Python's ``ast``); ``<<weight 96 lb to kg>>`` converts units
(``domains.units``). Length, nesting, magnitude and exponents are bounded, and a bad
expression never raises: ``evaluate`` returns a call whose ``error`` says what was wrong, and
the text the model sees is `` = error: <reason>``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from statistics import NormalDist
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from domains import units
from domains.errors import PonderError

OPEN, CLOSE = "<<", ">>"
_N = NormalDist()
# a call's body never holds a marker: each start scans only up to the next one, so a text of
# repeated openers is parsed in linear time
_BODY = r"((?:(?!" + re.escape(OPEN) + "|" + re.escape(CLOSE) + r").)*+)"
CALL = re.compile(re.escape(OPEN) + _BODY + re.escape(CLOSE), re.DOTALL)


class CalcLimits(BaseModel):
    """Bounds on what one expression, one step and one path may ask of the calculator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_chars: int = Field(default=240, ge=1, description="Longest expression, characters.")
    max_nodes: int = Field(default=120, ge=1, description="Most syntax-tree nodes.")
    max_depth: int = Field(default=24, ge=1, description="Deepest nesting of operations.")
    max_magnitude: float = Field(
        default=1e15, gt=0, description="Largest |value| of any intermediate result."
    )
    max_exponent: float = Field(default=64.0, gt=0, description="Largest |exponent| in a ** b.")
    per_step: int = Field(default=8, ge=0, description="Most calls in one reasoning step.")
    per_path: int = Field(default=32, ge=0, description="Most calls along one path.")


LIMITS = CalcLimits()


class CalcCall(BaseModel):
    """One evaluated expression, as a thought-tree node and the report record it."""

    expression: str = Field(description="The text between the markers.")
    value: float | None = Field(default=None, description="Exact result, None on error.")
    result: str | None = Field(default=None, description="The result as inserted in the text.")
    error: str | None = Field(default=None, description="Why it failed, None on success.")
    unit: str | None = Field(
        default=None, description="A conversion's target unit, inserted after the result."
    )

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def inserted(self) -> str:
        """The text that follows the closing marker."""
        if not self.ok:
            return f" = error: {self.error}"
        return f" = {self.result}{' ' + self.unit if self.unit else ''}"


def _ppf(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError("norm_ppf needs 0 < p < 1")
    return _N.inv_cdf(p)


def _round(x: float, digits: float = 0) -> float:
    if digits != int(digits) or not 0 <= digits <= 12:
        raise ValueError("round digits must be a whole number 0-12")
    return float(round(x, int(digits)))


FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    # name: (function, fewest args, most args)
    "sqrt": (math.sqrt, 1, 1),
    "ln": (math.log, 1, 1),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "min": (min, 1, 16),
    "max": (max, 1, 16),
    "round": (_round, 1, 2),
    "floor": (lambda x: float(math.floor(x)), 1, 1),
    "ceil": (lambda x: float(math.ceil(x)), 1, 1),
    "norm_cdf": (_N.cdf, 1, 1),
    "norm_ppf": (_ppf, 1, 1),
}
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


class _Refused(Exception):
    """An expression the calculator will not evaluate; the message is shown to the model."""


def evaluate(expression: str, limits: CalcLimits = LIMITS) -> CalcCall:
    """Evaluate one expression exactly; every failure becomes ``error`` (never raises)."""
    expr = expression.strip()
    if len(expr) <= limits.max_chars and units.looks_like(expr):
        return _conversion(expression, limits)
    try:
        if len(expr) > limits.max_chars:
            raise _Refused(f"expression longer than {limits.max_chars} characters")
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
        if sum(1 for _ in ast.walk(tree)) > limits.max_nodes:
            raise _Refused(f"expression has more than {limits.max_nodes} parts")
        value = _eval(tree.body, limits, 0)
    except _Refused as err:
        return CalcCall(expression=expression, error=str(err))
    except ZeroDivisionError:
        return CalcCall(expression=expression, error="division by zero")
    except SyntaxError:
        return CalcCall(expression=expression, error="not an arithmetic expression")
    except (ValueError, OverflowError, TypeError) as err:
        return CalcCall(expression=expression, error=_domain_message(err))
    except RecursionError:
        return CalcCall(expression=expression, error="expression nested too deeply")
    return CalcCall(expression=expression, value=value, result=format_number(value))


def _conversion(expression: str, limits: CalcLimits) -> CalcCall:
    out = units.convert(expression)
    if out.value is None:
        return CalcCall(expression=expression, error=out.error)
    if abs(out.value) > limits.max_magnitude:
        return CalcCall(expression=expression, error="result too large")
    return CalcCall(
        expression=expression, value=out.value, result=format_number(out.value), unit=out.unit
    )


def _domain_message(err: Exception) -> str:
    text = str(err)
    if isinstance(err, OverflowError) or "too large" in text:
        return "result too large"
    if text in ("math domain error", "expected a nonzero number"):
        return "outside the function's domain"
    return text or "invalid arguments"


def _eval(node: ast.AST, limits: CalcLimits, depth: int) -> float:
    if depth > limits.max_depth:
        raise _Refused(f"expression nested deeper than {limits.max_depth}")
    value = _eval_node(node, limits, depth + 1)
    if not math.isfinite(value) or abs(value) > limits.max_magnitude:
        raise _Refused("result too large")
    return value


def _eval_node(node: ast.AST, limits: CalcLimits, depth: int) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if abs(node.value) > limits.max_magnitude:
            raise _Refused("number too large")
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval(node.operand, limits, depth)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, limits, depth), _eval(node.right, limits, depth)
        if isinstance(node.op, ast.Pow) and abs(right) > limits.max_exponent:
            raise _Refused(f"exponent larger than {limits.max_exponent:g}")
        if isinstance(node.op, ast.Pow) and left < 0 and right != int(right):
            raise _Refused("fractional power of a negative number")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return _call(node, limits, depth)
    if isinstance(node, ast.Name):
        raise _Refused(f"unknown name {node.id!r}; functions: {', '.join(FUNCTIONS)}")
    raise _Refused("only numbers, + - * / **, parentheses and functions are allowed")


def _call(node: ast.Call, limits: CalcLimits, depth: int) -> float:
    name = node.func.id  # type: ignore[attr-defined]
    if name not in FUNCTIONS:
        raise _Refused(f"unknown function {name!r}; functions: {', '.join(FUNCTIONS)}")
    fn, lo, hi = FUNCTIONS[name]
    if not lo <= len(node.args) <= hi:
        raise _Refused(f"{name} takes {lo}{'' if lo == hi else f'-{hi}'} argument(s)")
    return float(fn(*(_eval(a, limits, depth) for a in node.args)))


def format_number(value: float) -> str:
    """The inserted text: whole numbers without a point; others to 6 decimal places (10
    significant digits below 0.01), since every digit is a token a model must copy."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 0.01:
        value = round(value, 6)
    text = format(Decimal(f"{value:.10g}"), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def annotate(expression: str, limits: CalcLimits = LIMITS) -> str:
    """``<<expr>> = result``: how a reference solution writes a computation. Raises if the
    expression fails, since a reference must compute cleanly."""
    call = evaluate(expression, limits)
    if not call.ok:
        raise ValueError(f"reference expression {expression!r} failed: {call.error}")
    return f"{OPEN}{expression}{CLOSE}{call.inserted}"


class Work:
    """Lines of a reference step where every computation goes through the calculator. Each
    result comes back as shown, so later lines reuse the number the way a model copying it
    would (references in every domain write their steps with this)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def calc(self, label: str, expr: str, unit: str = "") -> str:
        """Add ``- label: <<expr>> = result unit`` and return the result text."""
        call = evaluate(expr)
        if not call.ok:
            raise ValueError(f"reference expression {expr!r} failed: {call.error}")
        self.lines.append(
            f"- {label}: {OPEN}{expr}{CLOSE}{call.inserted}{' ' + unit if unit else ''}"
        )
        return call.result or ""

    def convert(self, stated: str, target: str) -> str:
        """Add ``- <<weight 96 lb to kg>> = 43.544868 kg`` and return the number shown."""
        expr = f"{stated} to {target}"
        call = evaluate(expr)
        if not call.ok or call.unit is None:
            raise ValueError(f"reference conversion {expr!r} failed: {call.error}")
        self.lines.append(f"- {OPEN}{expr}{CLOSE}{call.inserted}")
        return call.result or ""

    def say(self, line: str) -> None:
        self.lines.append(f"- {line}")

    def step(self, title: str) -> str:
        """The lines so far as one step titled ``title``; starts a fresh step."""
        text, self.lines = f"{title}:\n" + "\n".join(self.lines), []
        return text


def value_of(expression: str) -> float:
    """The exact value of an expression a reference computes (raises if it fails)."""
    call = evaluate(expression)
    if call.value is None:
        raise ValueError(f"reference expression {expression!r} failed: {call.error}")
    return call.value


def calls_in(text: str, limits: CalcLimits = LIMITS) -> list[CalcCall]:
    """Every ``<<expr>>`` in a finished text, re-evaluated (for references and the report)."""
    return [evaluate(m.group(1), limits) for m in CALL.finditer(text)]


_ANNOTATED = re.compile(re.escape(OPEN) + _BODY + re.escape(CLOSE) + r"(?= = )", re.DOTALL)


def strip_calls(text: str) -> str:
    """The same text without the notation (``<<a + b>> = c`` becomes ``a + b = c``): the
    reference a model trained without the calculator sees."""
    return _ANNOTATED.sub(lambda m: m.group(1), text)


def open_call(text: str) -> str | None:
    """The expression of a call the text has just closed (it ends with the closing marker
    and the last opening marker has no closing marker before it), else None."""
    if not text.endswith(CLOSE):
        return None
    start = text.rfind(OPEN, 0, len(text) - len(CLOSE))
    if start < 0 or CLOSE in text[start + len(OPEN) : -len(CLOSE)]:
        return None
    return text[start + len(OPEN) : -len(CLOSE)]


def check_tools(names: Sequence[str]) -> list[str]:
    """Validate tool names against ``TOOLS``; an unknown one lists the valid ones."""
    unknown = sorted(set(names) - set(TOOLS))
    if unknown:
        raise PonderError("tools", f"unknown tool(s) {unknown}", f"use a subset of {sorted(TOOLS)}")
    return list(dict.fromkeys(names))


def prompt_paragraph() -> str:
    """The one-paragraph explanation every prompt carries when the calculator is on. Its
    example shares no number or shape with any domain formula: a small model copies the
    prompt's example into its own expression (seen with an anion-gap-like example)."""
    return (
        "Calculator: write every computation as <<expression>> and stop; the exact result is "
        "inserted after it, e.g. <<(7 + 5) * 3>> = 36. Use + - * / ** ( ) and sqrt, ln, "
        "log10, exp, abs, min, max, round, floor, ceil, norm_cdf, norm_ppf. Convert units the "
        "same way, the value as stated then the unit wanted: <<distance 3 mi to km>> = "
        "4.828032 km. Do not compute in your head."
    )


# Tools a domain can turn on, with the paragraph its prompts carry (one registry, by name).
TOOLS: dict[str, Callable[[], str]] = {"calc": prompt_paragraph}


def _valid_tools(value: list[str] | None) -> list[str] | None:
    return None if value is None else check_tools(value)


# The tools knob of every stage that generates (infer, evaluate, finetune), declared once.
ToolNames = Annotated[
    list[str] | None,
    AfterValidator(_valid_tools),
    Field(
        description="Tools executed during generation: None = the domain's (calc), "
        "[] = none (--no-tools), to compare the two on the same cases."
    ),
]
