"""Reading real cases from CSV, JSONL or Parquet, with every bad row rejected with a reason.

Columns: ``family`` and ``inputs`` are required; ``id``, ``difficulty`` (default 3),
``truth`` and ``reference`` are optional. Nested fields are JSON strings in CSV/JSONL text
columns, or structs in Parquet/JSONL. Nothing is silently changed: a row either validates
against the family's schemas as given, or is rejected with the field and the reason. Text
that tries to instruct the model is data, and stays as written.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from domains.errors import PonderError, SafeReason, reason_of

if TYPE_CHECKING:
    from domains.base import Case, Domain, LoadResult

REQUIRED = ("family", "inputs")


@dataclass(frozen=True)
class Rejected:
    """A row that could not become a case: its number in the file, the reason, and its raw
    text (cut short)."""

    row: int | None
    reason: str
    raw: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "reason": self.reason, "raw": self.raw}


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Raw rows of a file, plus rows that could not even be read (JSONL lines)."""
    good, bad = [], []
    for item in iter_rows(path):
        if isinstance(item, Rejected):
            bad.append(item.as_dict())
        else:
            good.append(item)
    return good, bad


def iter_rows(path: Path) -> Iterator[dict[str, Any] | Rejected]:
    """The rows of a file one at a time (each with its number as ``_row``), or a
    ``Rejected`` for a row that cannot be read: a 100,000-row file is never held whole."""
    if not path.is_file():
        raise PonderError("path", f"no file at {path}", "pass an existing CSV, JSONL or Parquet")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _iter_csv(path)
    if suffix == ".parquet":
        return _iter_parquet(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _iter_jsonl(path)
    raise PonderError("path", f"unsupported file type {suffix!r}", "use .csv, .jsonl or .parquet")


MAX_CSV_FIELD = 16 * 2**20  # characters in one CSV cell (an alert's transaction list)
BATCH = 1000  # rows of a Parquet file decoded at a time


def _iter_csv(path: Path) -> Iterator[dict[str, Any] | Rejected]:
    """Rows of a CSV as strings, one record at a time: a record with more or fewer fields
    than the header, or with bytes that are not UTF-8, is rejected with its reason; an
    empty file or a header that repeats a column is a file-level error (raised before the
    first row)."""
    csv.field_size_limit(MAX_CSV_FIELD)
    handle = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except csv.Error as err:
        handle.close()
        raise PonderError("path", f"{path.name}: unreadable CSV header ({err})", _CSV_FIX) from None
    problem = _header_problem(header)
    if problem:
        handle.close()
        raise PonderError("path", f"{path.name}{problem}", _CSV_FIX)
    return _csv_records(handle, reader, header or [])


def _header_problem(header: list[str] | None) -> str | None:
    if not header or not any(h.strip() for h in header):
        return " is empty (no header row)"
    if len(set(header)) != len(header):
        return ": the header repeats a column"
    return None


def _csv_records(
    handle: IO[str], reader: Any, header: list[str]
) -> Iterator[dict[str, Any] | Rejected]:
    with handle:
        for n in itertools.count():
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield Rejected(n, f"unreadable CSV record ({err})", None)
                continue
            if not record:  # a blank line is no record; a line of empty fields is one
                continue
            reason = _csv_problem(record, len(header))
            if reason:
                raw = ",".join(record)[:500].encode("utf-8", "surrogateescape")
                yield Rejected(n, reason, raw.decode("utf-8", "replace"))
            else:
                yield {"_row": n, **dict(zip(header, record, strict=True))}


_CSV_FIX = "save it as UTF-8 CSV with one header row (family,inputs,... ) and one record per row"


def _csv_problem(record: list[str], width: int) -> str | None:
    if len(record) != width:
        return f"record has {len(record)} fields, the header has {width}"
    if any("\udc80" <= ch <= "\udcff" for f in record for ch in f):
        return "record is not valid UTF-8 (mixed encodings); re-save the file as UTF-8"
    return None


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import polars as pl

    n = 0
    for batch in pl.scan_parquet(path).collect_batches(chunk_size=BATCH):
        for row in batch.iter_rows(named=True):
            yield {"_row": n, **row}
            n += 1


BOM = b"\xef\xbb\xbf"


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of a file as ``bytes.splitlines`` gives them (a UTF-8 BOM dropped), read
    one at a time."""
    with path.open("rb") as handle:
        first = True
        for chunk in handle:  # split on \n; splitlines also splits a lone \r
            if first:
                chunk, first = chunk.removeprefix(BOM), False
            yield from chunk.splitlines()


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any] | Rejected]:
    for n, raw in enumerate(_lines(path)):
        if raw.strip():
            yield _json_line(n, raw)


def _json_line(n: int, raw: bytes) -> dict[str, Any] | Rejected:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        reason = "line is not valid UTF-8 (mixed encodings); re-save the file as UTF-8"
        return Rejected(n, reason, raw[:500].decode("latin-1"))
    except (ValueError, RecursionError) as err:
        return Rejected(n, f"malformed JSON: {str(err)[:120]}", _head(raw))
    if isinstance(row, dict):
        return {"_row": n, **row}
    return Rejected(n, "line is not a JSON object", _head(raw))


def _head(raw: bytes) -> str:
    return raw[:500].decode("utf-8", "replace")


def load_cases(domain: Domain, path: Path) -> LoadResult:
    """Validate each row against the domain's schemas; see the module docstring."""
    from domains.base import LoadResult

    result = LoadResult()
    for item in iter_cases(domain, path):
        if isinstance(item, Rejected):
            result.rejected.append(item.as_dict())
        else:
            result.cases.append(item)
    return result


def iter_cases(domain: Domain, path: Path) -> Iterator[Case | Rejected]:
    """Each row of the file as a case, or as a ``Rejected`` with the field and the reason,
    one at a time."""
    for item in iter_rows(path):
        if isinstance(item, Rejected):
            yield item
            continue
        index = item.pop("_row")
        try:
            yield row_to_case(domain, item)
        except (ValueError, TypeError, ValidationError, PonderError, RecursionError) as err:
            yield Rejected(index, reason_of(err), _raw(item))


def row_to_case(domain: Domain, row: dict[str, Any]) -> Case:
    from domains.base import Case, case_id

    missing = [c for c in REQUIRED if row.get(c) in (None, "")]
    if missing:
        raise SafeReason(f"missing column(s) {missing}")
    fam = domain.family(str(row["family"]))
    inputs = _validate(fam.Inputs, row["inputs"], "inputs")
    truth = row.get("truth")
    truth = None if truth in (None, "") else _validate(fam.Answer, truth, "truth")
    given = row.get("id")
    return Case(
        id=case_id(domain.name, fam.name, inputs) if given in (None, "") else str(given),
        domain=domain.name,
        family=fam.name,
        difficulty=_difficulty(row.get("difficulty")),
        inputs=inputs,
        truth=truth,
        reference=row.get("reference") or None,
    )


def _difficulty(value: Any) -> int:
    """A level 1-5 as given; missing means 3. Never rounded or replaced: 0, 2.7 or "hard"
    are refused."""
    if value in (None, ""):
        return 3
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not (number.is_integer() and 1 <= number <= 5):
        raise SafeReason("difficulty: must be a whole number from 1 to 5 (or empty for 3)")
    return int(number)


def _validate(model: type, value: Any, field: str) -> dict[str, Any]:
    try:
        return model.model_validate(_json(value, field)).model_dump(mode="json")
    except ValidationError as err:
        raise SafeReason(reason_of(err, prefix=field)) from None


def _json(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as err:
            raise SafeReason(f"{field} is not valid JSON ({str(err)[:80]})") from None
        except RecursionError:
            raise SafeReason(f"{field} is nested too deeply to be a case") from None
    return value


def _raw(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str)[:2000]
