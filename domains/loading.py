"""Reading real cases from CSV, JSONL or Parquet, with every bad row rejected with a reason.

Columns: ``family`` and ``inputs`` are required; ``id``, ``difficulty`` (default 3),
``truth`` and ``reference`` are optional. Nested fields are JSON strings in CSV/JSONL text
columns, or structs in Parquet/JSONL. Nothing is silently changed: a row either validates
against the family's schemas as given, or is rejected with the field and the reason. Text
that tries to instruct the model is data, and stays as written.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from domains.errors import PonderError, SafeReason, reason_of

if TYPE_CHECKING:
    from domains.base import Case, Domain, LoadResult

REQUIRED = ("family", "inputs")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Raw rows of a file, plus rows that could not even be read (JSONL lines)."""
    import polars as pl

    if not path.is_file():
        raise PonderError("path", f"no file at {path}", "pass an existing CSV, JSONL or Parquet")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return pl.read_parquet(path).to_dicts(), []
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path)
    raise PonderError("path", f"unsupported file type {suffix!r}", "use .csv, .jsonl or .parquet")


BOM = b"\xef\xbb\xbf"
MAX_CSV_FIELD = 16 * 2**20  # characters in one CSV cell (an alert's transaction list)


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of a CSV as strings, one record at a time: a record with more or fewer fields
    than the header, or with bytes that are not UTF-8, is rejected with its reason; an
    empty file or a header that repeats a column is a file-level error."""
    text = path.read_bytes().removeprefix(BOM).decode("utf-8", "surrogateescape")
    csv.field_size_limit(MAX_CSV_FIELD)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise PonderError("path", f"{path.name}: unreadable CSV header ({err})", _CSV_FIX) from None
    if not header or not any(h.strip() for h in header):
        raise PonderError("path", f"{path.name} is empty (no header row)", _CSV_FIX)
    if len(set(header)) != len(header):
        raise PonderError("path", f"{path.name}: the header repeats a column", _CSV_FIX)
    good, bad = [], []
    for n in itertools.count():
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            bad.append({"row": n, "reason": f"unreadable CSV record ({err})", "raw": None})
            continue
        if not record:  # a blank line is no record; a line of empty fields is one
            continue
        reason = _csv_problem(record, len(header))
        if reason:
            raw = ",".join(record)[:500].encode("utf-8", "surrogateescape")
            bad.append({"row": n, "reason": reason, "raw": raw.decode("utf-8", "replace")})
        else:
            good.append({"_row": n, **dict(zip(header, record, strict=True))})
    return good, bad


_CSV_FIX = "save it as UTF-8 CSV with one header row (family,inputs,... ) and one record per row"


def _csv_problem(record: list[str], width: int) -> str | None:
    if len(record) != width:
        return f"record has {len(record)} fields, the header has {width}"
    if any("\udc80" <= ch <= "\udcff" for f in record for ch in f):
        return "record is not valid UTF-8 (mixed encodings); re-save the file as UTF-8"
    return None


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    good, bad = [], []
    for n, raw in enumerate(path.read_bytes().removeprefix(BOM).splitlines()):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(
                {
                    "row": n,
                    "reason": "line is not valid UTF-8 (mixed encodings); "
                    "re-save the file as UTF-8",
                    "raw": raw[:500].decode("latin-1"),
                }
            )
            continue
        except (ValueError, RecursionError) as err:
            bad.append(
                {
                    "row": n,
                    "reason": f"malformed JSON: {str(err)[:120]}",
                    "raw": raw[:500].decode("utf-8", "replace"),
                }
            )
            continue
        if isinstance(row, dict):
            good.append({"_row": n, **row})
        else:
            bad.append(
                {
                    "row": n,
                    "reason": "line is not a JSON object",
                    "raw": raw[:500].decode("utf-8", "replace"),
                }
            )
    return good, bad


def load_cases(domain: Domain, path: Path) -> LoadResult:
    """Validate each row against the domain's schemas; see the module docstring."""
    from domains.base import LoadResult

    rows, unreadable = read_rows(path)
    result = LoadResult(rejected=unreadable)
    for n, row in enumerate(rows):
        index = row.pop("_row", n)
        try:
            result.cases.append(row_to_case(domain, row))
        except (ValueError, TypeError, ValidationError, PonderError, RecursionError) as err:
            result.rejected.append({"row": index, "reason": reason_of(err), "raw": _raw(row)})
    return result


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
