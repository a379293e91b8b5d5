"""The Parquet lake: versioned datasets that appear whole or not at all.

Layout: ``<lake_root>/<domain>/<dataset>/<version>/part-00000.parquet`` plus
``_manifest.json`` (rows, schema, content hash, sources, parent version, splits). A version
is a full snapshot. It is written into a hidden temporary folder and renamed into place,
so a reader never sees half a version, and a crash leaves only a temporary folder that the
next write removes. Writing content identical to the latest version creates nothing, which
makes re-runs idempotent. Rejected rows go to ``_quarantine/`` with a reason per row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from filelock import FileLock

from domains.errors import PonderError
from domains.faults import failpoint

DATASETS = ("cases", "feedback", "rollouts", "predictions", "pairs", "steps")
_VERSION = re.compile(r"^v(\d{5})$")
# a name that becomes one path component: no separator, no leading dot, no "..", bounded
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _plain(value: object) -> bool:
    """One path component: the pattern, and no ``..`` inside it."""
    return isinstance(value, str) and bool(_NAME.match(value)) and ".." not in value


def safe_name(field: str, value: str) -> str:
    """``value`` if it is one plain path component, else a PonderError naming ``field``:
    names from parameters (domain, version, run id) must never reach outside the lake."""
    if not _plain(value):
        raise PonderError(
            field,
            f"{str(value)[:80]!r} is not a plain name",
            "use letters, digits, '_', '-' and '.' only (no path separators, no '..', at "
            "most 128 characters)",
        )
    return value


def state_file_name(key: str) -> str:
    """A state key as a file name: plain keys as they are, any other (e.g. one built from an
    MLflow experiment name) as a readable slug plus a hash, so it cannot leave ``_state``."""
    if _plain(key):
        return key
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", key)[:48].strip("_") or "key"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class VersionInfo:
    """A committed dataset version."""

    domain: str
    dataset: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])


class Lake:
    """Versioned Parquet datasets under one root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def dataset_dir(self, domain: str, dataset: str) -> Path:
        if dataset not in DATASETS:
            raise PonderError("dataset", f"unknown dataset {dataset!r}", f"use one of {DATASETS}")
        return self.root / safe_name("domain", domain) / dataset

    def versions(self, domain: str, dataset: str) -> list[str]:
        """Committed versions, oldest first (a folder counts only with its manifest)."""
        base = self.dataset_dir(domain, dataset)
        if not base.is_dir():
            return []
        found = [
            p.name
            for p in base.iterdir()
            if _VERSION.match(p.name) and (p / "_manifest.json").is_file()
        ]
        return sorted(found)

    def latest(self, domain: str, dataset: str) -> VersionInfo | None:
        versions = self.versions(domain, dataset)
        return self.info(domain, dataset, versions[-1]) if versions else None

    def info(self, domain: str, dataset: str, version: str) -> VersionInfo:
        if not isinstance(version, str) or not _VERSION.match(version):
            raise PonderError(
                "version",
                f"{str(version)[:80]!r} is not a lake version",
                "use vNNNNN (five digits, e.g. v00001), or leave it out for the latest",
            )
        path = self.dataset_dir(domain, dataset) / version
        manifest_path = path / "_manifest.json"
        if not manifest_path.is_file():
            have = self.versions(domain, dataset)
            raise PonderError(
                "version",
                f"{domain}/{dataset} has no version {version!r}",
                f"use one of {have or '[] (run collect first)'}",
            )
        return VersionInfo(domain, dataset, version, path, json.loads(manifest_path.read_text()))

    def scan(self, domain: str, dataset: str, version: str | None = None) -> pl.LazyFrame:
        """Lazy frame over one version (default: latest)."""
        info = self.info(domain, dataset, version) if version else self.latest(domain, dataset)
        if info is None:
            raise PonderError(
                "dataset", f"{domain}/{dataset} has no versions yet", "run `ponder collect` first"
            )
        return pl.scan_parquet(info.path / "part-*.parquet")

    def write_version(
        self,
        domain: str,
        dataset: str,
        frame: pl.LazyFrame | pl.DataFrame,
        sources: list[str],
        *,
        extra: dict[str, Any] | None = None,
        attachments: dict[str, Attachment] | None = None,
    ) -> VersionInfo | None:
        """Commit ``frame`` as the next version, or return None if it equals the latest.
        ``attachments`` (e.g. thought trees; a list of frames is written one after another
        into one file) go into the same atomic folder."""
        with self.write_lock(domain, dataset):
            return self._write_locked(
                domain, dataset, frame, sources, extra=extra, attachments=attachments
            )

    @property
    def scratch(self) -> Path:
        """Where a stage keeps unmasked working files while it runs (inside the lake, as
        the data they come from)."""
        return self.root / "_scratch"

    def write_lock(self, domain: str, dataset: str) -> FileLock:
        """One writer per dataset at a time (across processes; the OS frees it when its
        holder dies), so concurrent runs never claim the same version number and a
        writer's sweep never removes another writer's staging folder."""
        base = self.dataset_dir(domain, dataset)
        base.mkdir(parents=True, exist_ok=True)
        return FileLock(str(base / ".write.lock"), timeout=600)

    def _write_locked(
        self,
        domain: str,
        dataset: str,
        frame: pl.LazyFrame | pl.DataFrame,
        sources: list[str],
        *,
        extra: dict[str, Any] | None,
        attachments: dict[str, Attachment] | None,
    ) -> VersionInfo | None:
        base = self.dataset_dir(domain, dataset)
        self._sweep(base)
        lazy = frame.lazy()
        parent = self.latest(domain, dataset)
        staging = base / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            lazy.sink_parquet(staging / "part-00000.parquet")
            failpoint("lake.write")
            written = pl.scan_parquet(staging / "part-00000.parquet")
            digest = content_digest(written)
            empty = written.select(pl.len()).collect().item() == 0
            if (parent is None and empty) or (
                parent is not None and parent.manifest["content_hash"] == digest
            ):
                shutil.rmtree(staging)
                return None
            version = f"v{(int(parent.version[1:]) + 1) if parent else 1:05d}"
            for name, table in (attachments or {}).items():
                parts = table if isinstance(table, list) else [table.lazy()]
                stream_parquet(parts, staging / name)
            manifest = _manifest(written, digest, sources, parent, extra)
            _write_json(staging / "_manifest.json", manifest)
            _fsync_dir(staging)
            failpoint("lake.commit")
            os.rename(staging, base / version)  # atomic on one filesystem
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.info(domain, dataset, version)

    def stage(self, domain: str, dataset: str, run_id: str) -> Path:
        """A scratch Parquet path for one run's intermediate rows (never read as a version)."""
        base = self.dataset_dir(domain, dataset)
        base.mkdir(parents=True, exist_ok=True)
        return base / f".stage-{safe_name('run_id', run_id)}.parquet"

    def quarantine(
        self, domain: str, dataset: str, rejected: pl.DataFrame, run_id: str
    ) -> Path | None:
        """Write rejected rows (with a ``reason`` column) for one run; None when none."""
        if rejected.height == 0:
            return None
        folder = self.dataset_dir(domain, dataset) / "_quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_name('run_id', run_id)}.parquet"
        tmp = folder / f".{run_id}.tmp"
        rejected.write_parquet(tmp)
        os.replace(tmp, path)
        return path

    def state(self, domain: str, key: str) -> dict[str, Any]:
        path = self._state_path(domain, key)
        return json.loads(path.read_text()) if path.is_file() else {}

    def save_state(self, domain: str, key: str, value: dict[str, Any]) -> None:
        path = self._state_path(domain, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, value)

    def _state_path(self, domain: str, key: str) -> Path:
        return self.root / safe_name("domain", domain) / "_state" / f"{state_file_name(key)}.json"

    @staticmethod
    def _sweep(base: Path) -> None:
        """Remove staging folders left by a crashed writer."""
        for leftover in base.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)


Attachment = pl.DataFrame | pl.LazyFrame | list[pl.LazyFrame]


def stream_parquet(parts: list[pl.LazyFrame], path: Path, *, rows: int = 1000) -> None:
    """Write the frames ``parts`` one after another into ``path``, ``rows`` at a time
    (polars batches into one pyarrow writer), under the columns of them all (one lacking a
    column gets nulls). polars' ``sink_parquet`` of 100 concatenated tree files held them
    whole (+860 MB for 100,000 trees); batches of their concat held +168 MB, because polars
    reads ahead across files; one file at a time holds one file."""
    import pyarrow.parquet as pq

    empty = pl.concat(parts, how="diagonal_relaxed").limit(0).collect()
    writer = None
    try:
        for part in parts:
            aligned = pl.concat([empty.lazy(), part], how="diagonal_relaxed")
            for batch in aligned.collect_batches(chunk_size=rows):
                table = batch.to_arrow()
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no rows: the file still carries the schema
        empty.write_parquet(path)


def content_digest(frame: pl.LazyFrame) -> str:
    """Order-independent digest of a frame's rows (via their content_hash column)."""
    hashes = frame.select(pl.col("content_hash").sort()).collect()["content_hash"]
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for chunk in hashes.cast(pl.String).to_list():
        h.update(chunk.encode())
    return h.hexdigest()


def row_hash(columns: list[str]) -> pl.Expr:
    """Content hash of the given columns, as a hex string column ``content_hash``."""
    return (
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f"
        )
        .hash(seed=7)
        .cast(pl.String)
        .alias("content_hash")
    )


def _manifest(
    frame: pl.LazyFrame,
    digest: str,
    sources: list[str],
    parent: VersionInfo | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    schema = frame.collect_schema()
    rows = frame.select(pl.len()).collect().item()
    return {
        "rows": rows,
        "schema": {k: str(v) for k, v in schema.items()},
        "content_hash": digest,
        "sources": sources,
        "parent": parent.version if parent else None,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        **(extra or {}),
    }


def tmp_beside(path: Path) -> Path:
    """A temporary name beside ``path`` that is this writer's own, for write-then-rename:
    two writers sharing one name would rename each other's file away."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = tmp_beside(path)
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as fh:
            os.fsync(fh.fileno())
