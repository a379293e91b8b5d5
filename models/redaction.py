"""Where redaction is switched on: the key, per-domain overrides, and process-wide hooks.

``redactor(domain)`` gives the ``Redactor`` for one domain: its own ``RedactionConfig``
with any override from ``PONDER_REDACTION`` applied, keyed by ``PONDER_REDACT_KEY`` or, when
that is unset, a random key kept in ``<home>/.redact-key`` (mode 0600), so masks stay the
same across runs on one home. ``install()`` covers the channels that have no domain at
hand: every log record made in this process (Prefect's run logger, library loggers) is
redacted when it is created, and every MLflow trace span before it is exported. Flows
call it first; the report, artifacts and traces also redact explicitly with their domain's
redactor, so they stay masked even where ``install`` was not called.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import traceback
from pathlib import Path
from typing import Any

from domains.base import domain_names, get_domain
from domains.privacy import Known, Redactor, merge
from models.settings import get_settings

_installed: dict[str, Any] = {}
_KNOWN = Known()  # one memory of seen identifiers for every redactor of this process


def _key() -> bytes:
    settings = get_settings()
    if settings.redact_key is not None:
        return settings.redact_key.get_secret_value().encode()
    path = Path(settings.home) / ".redact-key"
    if not path.is_file():
        create_key(path)
    return path.read_text().strip().encode()


def create_key(path: Path) -> None:
    """Write a fresh key beside ``path`` and link it into place, which fails if another
    process got there first: a reader never sees a created but still empty key file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".redact-key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process's key won: use it
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@functools.cache
def _cached(domain: str | None, home: str) -> Redactor:
    overrides = get_settings().redaction
    if domain is None:
        configs = [overrides.get(n, get_domain(n).redaction) for n in domain_names()]
        return Redactor(merge(configs), _key(), _KNOWN)
    return Redactor(overrides.get(domain, get_domain(domain).redaction), _key(), _KNOWN)


def redactor(domain: str | None = None) -> Redactor:
    """The domain's redactor; ``None`` masks what any registered domain masks."""
    return _cached(domain, str(get_settings().home))


def learn(domain: str, values: Any) -> None:
    """Remember the identifiers in ``values`` (cases' inputs, prompts) as they leave the
    lake, before their text goes anywhere."""
    redactor(domain).learn(values)


def install() -> None:
    """Redact every log record and MLflow span this process makes (idempotent)."""
    if _installed:
        return
    base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            _redact_record(record, redactor())
        except Exception:  # noqa: BLE001 (a log call must never fail)
            record.msg, record.args = "[log message withheld: redaction failed]", None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record

    logging.setLogRecordFactory(factory)
    _install_tracing()
    _installed["done"] = True


def _redact_record(record: logging.LogRecord, red: Any) -> None:
    """The message, and a traceback or stack as text, masked now: a formatter would render
    ``exc_info`` later, after this hook, with the raw values in the exception's message."""
    record.msg, record.args = red.text(record.getMessage()), None
    if record.exc_info:
        trace = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text, record.exc_info = red.text(trace), None
    if record.stack_info:
        record.stack_info = red.text(record.stack_info)


WITHHELD = "[withheld: redaction failed]"


def redact_span(span: Any) -> None:
    """Mask a span before export; if masking fails, the span leaves with its inputs and
    outputs withheld (fail closed: MLflow would export it raw), and the failure is logged."""
    try:
        red = redactor()
        if span.inputs is not None:
            span.set_inputs(red.value(span.inputs))
        if span.outputs is not None:
            span.set_outputs(red.value(span.outputs))
    except Exception:  # noqa: BLE001
        span.set_inputs(WITHHELD)
        span.set_outputs(WITHHELD)
        logging.getLogger(__name__).error("span withheld: its redaction failed")


def _install_tracing() -> None:
    import mlflow

    mlflow.tracing.configure(span_processors=[redact_span])


def redacted_copy(src: Path, dst: Path, domain: str | None) -> Path:
    """Copy the files under ``src`` to ``dst`` with identifiers masked: Parquet cell by
    cell, text files whole (for uploads such as TRL's completion tables)."""
    import polars as pl

    red = redactor(domain)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            rows = [red.value(r) for r in pl.read_parquet(path).to_dicts()]
            pl.DataFrame(rows, infer_schema_length=None).write_parquet(target)
        else:
            target.write_text(red.text(path.read_text(errors="replace")))
    return dst
