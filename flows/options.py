"""One declaration per knob: a stage's command-line options are generated from its params model.

A field added to a ``*Params`` model (or to a config nested in one) becomes an option of the
stage's command, with the field's description as help and its default shown, without any
other edit. Nested fields are spelled with a dot: ``--train.grpo-max-steps``. Every command
also takes ``--config FILE`` (a YAML/JSON mapping of the same shape) and ``--set a.b=VALUE``
(a YAML value), applied in that order: config, then options, then ``--set``.

Validation errors from any of these paths, and from YAML files and deployment parameters,
go through :func:`validated`, which names the key and, for an unknown key, the valid ones.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
import yaml
from pydantic import BaseModel, ValidationError

from domains.errors import PonderError

SEP = "__"  # the Python name of a nested option: train__grpo_max_steps
SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Knob:
    """One leaf field of a params model, as a command-line option."""

    path: tuple[str, ...]
    kind: Any  # the option's Python type for typer
    help: str
    default: Any
    as_yaml: bool  # the text is read as YAML (dicts, tuples, unions)
    required: bool = False

    @property
    def name(self) -> str:
        return SEP.join(self.path)

    @property
    def flag(self) -> str:
        dotted = ".".join(p.replace("_", "-") for p in self.path)
        return f"--{dotted}/--no-{dotted}" if self.kind is bool else f"--{dotted}"


@dataclass(frozen=True)
class Extra:
    """A command-line convenience that is not a field: its option and what it sets."""

    name: str
    option: Any  # Annotated[type, typer.Option(...)]
    default: Any
    apply: Callable[[dict[str, Any], Any], None]


def knobs(schema: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[Knob]:
    """Every leaf field of ``schema``; a required nested model is walked into."""
    for name, field in schema.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            yield from knobs(nested, (*prefix, name))
            continue
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        kind = _option_type(nested)
        help = (field.description or "") + (" (required)" if required else "")
        yield Knob((*prefix, name), kind or str, help, default, as_yaml=kind is None,
                   required=required)  # fmt: skip


def _option_type(annotation: Any) -> Any:
    """bool/int/float/str stay typed; a list of scalars is a repeatable option; a literal is
    text (pydantic names the allowed values); None for anything else (YAML text)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation in SCALARS:
        return annotation
    if get_origin(annotation) is Literal or annotation is Path:
        return str
    if get_origin(annotation) is list and all(_scalar(a) for a in get_args(annotation)):
        return list[str]
    return None


def _scalar(annotation: Any) -> bool:
    return (
        annotation in SCALARS
        or get_origin(annotation) is Literal
        or (get_origin(annotation) is Annotated and get_args(annotation)[0] in SCALARS)
    )


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "see --set"
    return "none" if value is None else str(value)


def _parameter(knob: Knob) -> inspect.Parameter:
    shown = False if knob.required else _shown(knob.default)
    option = typer.Option(knob.flag, help=knob.help, show_default=shown)
    return inspect.Parameter(
        knob.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[knob.kind | None, option],
    )


COMMON = (
    Extra(
        "config",
        Annotated[Path | None, typer.Option(help="YAML/JSON mapping of these params.")],
        None,
        lambda values, path: values.update(read_config(path)) if path else None,
    ),
    Extra(
        "set_",
        Annotated[
            list[str] | None,
            typer.Option("--set", help="KEY.PATH=VALUE (YAML value; null clears), repeatable."),
        ],
        None,
        lambda values, items: [put(values, *parse_set(i)) for i in items or []],
    ),
)


def command(
    app: typer.Typer,
    name: str,
    schema: type[BaseModel],
    run: Callable[[Any], None],
    *,
    help: str,
    extras: tuple[Extra, ...] = (),
    wrap: Callable[[Callable[..., None]], Callable[..., None]] = lambda fn: fn,
) -> None:
    """Add ``name`` to ``app``: options from ``schema``'s fields, ``--config``, ``--set`` and
    ``extras``; the validated params go to ``run``; ``wrap`` decorates the command (errors)."""
    fields = list(knobs(schema))
    own = [
        inspect.Parameter(
            e.name, inspect.Parameter.KEYWORD_ONLY, default=e.default, annotation=e.option
        )  # fmt: skip
        for e in (*extras, *COMMON)
    ]

    def body(**given: Any) -> None:
        values: dict[str, Any] = {}
        COMMON[0].apply(values, given.pop("config"))
        for knob in fields:
            value = given.pop(knob.name)
            if value is not None and value != []:  # not given (a repeatable gives [])
                put(values, knob.path, _yaml(value, knob.flag) if knob.as_yaml else value)
        sets = given.pop("set_")
        for extra in extras:
            extra.apply(values, given.pop(extra.name))
        COMMON[1].apply(values, sets)
        run(validated(schema, values, where=f"`ponder {name}` (see --help)"))

    params = [_parameter(k) for k in fields] + own
    body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    body.__annotations__ = {p.name: p.annotation for p in params}
    body.__doc__ = help
    app.command(name)(wrap(body))


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PonderError(where, f"{text!r} is not a YAML value: {err}", "quote it") from None


def parse_set(item: str) -> tuple[tuple[str, ...], Any]:
    """``a.b=VALUE`` -> (("a", "b"), the YAML value)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise PonderError("--set", f"{item!r} has no KEY=VALUE", "write e.g. train.max_steps=4")
    return tuple(key.strip().split(".")), _yaml(text, f"--set {key}")


def put(values: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``values[a][b]... = value``, creating the mappings on the way."""
    *parents, last = path
    for part in parents:
        child = values.get(part)
        if not isinstance(child, dict):
            child = values[part] = {}
        values = child
    values[last] = value


def read_config(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping from ``path``."""
    if not path.is_file():
        raise PonderError("config", f"no file at {path}", "pass an existing YAML/JSON file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PonderError("config", f"{path} is not valid YAML: {err}", "fix the file") from None
    if not isinstance(values, dict):
        raise PonderError("config", f"{path} holds a {type(values).__name__}", "write a mapping")
    return values


def validated(schema: type[BaseModel], values: dict[str, Any], *, where: str, key: str = "") -> Any:
    """``schema(**values)``; the first error becomes a PonderError naming the key (after the
    ``key`` prefix), and for an unknown key the valid keys at that level."""
    try:
        return schema(**values)
    except ValidationError as err:
        first = err.errors(include_input=False)[0]
        field = ".".join([key] * bool(key) + [str(p) for p in first["loc"]]) or "params"
        if first["type"] == "extra_forbidden":
            valid = sorted(_model_at(schema, first["loc"][:-1]).model_fields)
            raise PonderError(field, f"unknown key in {where}", f"use one of {valid}") from None
        problem = first["msg"].removeprefix("Value error, ")
        raise PonderError(field, problem, f"fix it in {where}") from None


def unknown_keys(values: dict[str, Any], valid: set[str], *, where: str, key: str) -> None:
    """Refuse a key of ``values`` outside ``valid``, naming it and the valid ones."""
    for name in values:
        if name not in valid:
            raise PonderError(
                f"{key}.{name}", f"unknown key in {where}", f"use one of {sorted(valid)}"
            )


def flow_schema(fn: Any) -> type[BaseModel]:
    """The pydantic model of a ponder flow's ``params`` argument."""
    from typing import get_type_hints

    hint = get_type_hints(getattr(fn, "fn", fn))["params"]
    return next(a for a in getattr(hint, "__args__", (hint,)) if a is not type(None))


def _model_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model a validation location points into (through optional and union types)."""
    for part in loc:
        annotation = schema.model_fields[str(part)].annotation
        schema = next(
            a for a in (annotation, *get_args(annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        )  # fmt: skip
    return schema
