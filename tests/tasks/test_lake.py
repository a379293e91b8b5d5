"""The lake under faults: concurrent writers, a full disk, a writer killed mid-version."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from tasks.context import StageContext
from tasks.lake import Lake, row_hash


def _frame(tag: str, n: int = 3) -> pl.DataFrame:
    frame = pl.DataFrame({"id": [f"{tag}-{i}" for i in range(n)], "x": list(range(n))})
    return frame.with_columns(row_hash(["id", "x"]))


def _write(root: str, tag: str, barrier: mp.Barrier, out: mp.Queue) -> None:
    barrier.wait()
    info = Lake(Path(root)).write_version("medicine", "predictions", _frame(tag), [tag])
    out.put(info.version if info else None)


def _race(root: Path, tags: list[str]) -> list[str | None]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(tags)), ctx.Queue()
    procs = [ctx.Process(target=_write, args=(str(root), t, barrier, out)) for t in tags]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [out.get(timeout=5) for _ in procs]


def test_two_writers_of_the_same_output_make_one_version(tmp_path: Path, record) -> None:
    got = _race(tmp_path, ["same", "same"])  # one result per writer that exited 0
    lake = Lake(tmp_path)
    assert lake.versions("medicine", "predictions") == ["v00001"]
    assert sorted(got, key=str) == [None, "v00001"]  # the second saw identical content
    rows = lake.scan("medicine", "predictions").collect().height
    assert rows == 3
    record("two writers of one dataset version at once", 2, len(got), 3 - rows)


def test_two_writers_of_different_output_get_distinct_versions(tmp_path: Path) -> None:
    got = _race(tmp_path, ["a", "b"])
    lake = Lake(tmp_path)
    assert sorted(got) == ["v00001", "v00002"]
    for v in ("v00001", "v00002"):
        assert lake.info("medicine", "predictions", v).rows == 3
    assert not list((tmp_path / "medicine" / "predictions").glob(".tmp-*"))


def test_disk_full_by_failpoint_leaves_nothing_visible(tmp_path: Path, monkeypatch, record):
    lake = Lake(tmp_path)
    lake.write_version("medicine", "cases", _frame("one"), ["s"])
    monkeypatch.setenv("PONDER_FAILPOINTS", "lake.write=enospc")
    with pytest.raises(OSError, match="No space left"):
        lake.write_version("medicine", "cases", _frame("two"), ["s"])
    visible = lake.versions("medicine", "cases")
    lost = 3 - lake.scan("medicine", "cases").collect().height
    assert visible == ["v00001"] and lost == 0
    assert not list((tmp_path / "medicine" / "cases").glob(".tmp-*"))
    record("disk full while writing a version (write hook)", 1, int(visible == ["v00001"]), lost)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 512 KiB tmpfs (needs root and mount; skipped with the reason otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): a real ENOSPC "
            "went untested; the RLIMIT_FSIZE test below still fails a real write"
        )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_leaves_no_partial_version(tiny_disk: Path, record) -> None:
    lake = Lake(tiny_disk)
    lake.write_version("medicine", "cases", _frame("small"), ["s"])
    rng = pl.int_range(0, 400_000, eager=True)
    big = pl.DataFrame({"id": rng.cast(pl.String) + "-" + rng.hash().cast(pl.String), "x": rng})
    with pytest.raises(Exception, match="(?i)space|os error 28"):
        lake.write_version("medicine", "cases", big.with_columns(row_hash(["id", "x"])), ["s"])
    visible, rows = lake.versions("medicine", "cases"), lake.scan("medicine", "cases").collect()
    assert visible == ["v00001"] and rows.height == 3
    record(
        "disk full while writing a version (512 KiB tmpfs)",
        1,
        int(visible == ["v00001"]),
        3 - rows.height,
    )
    assert not list((tiny_disk / "medicine" / "cases").glob(".tmp-*"))
    assert shutil.disk_usage(tiny_disk).free > 0  # the failed write's bytes were given back


def _write_over_limit(root: str, limit: int, out: mp.Queue) -> None:
    """In a child: a file-size limit the OS enforces (EFBIG), then a version too big for it."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    rng = pl.int_range(0, 400_000, eager=True)
    big = pl.DataFrame({"id": rng.cast(pl.String) + "-" + rng.hash().cast(pl.String), "x": rng})
    try:
        Lake(Path(root)).write_version(
            "medicine", "cases", big.with_columns(row_hash(["id", "x"])), ["s"]
        )
        out.put("written")
    except Exception as err:  # noqa: BLE001 (reported to the parent)
        out.put(f"{type(err).__name__}: {err}")


def test_a_write_over_the_file_size_limit_leaves_no_partial_version(tmp_path: Path, record) -> None:
    """Needs no mount, so it runs everywhere: the OS refuses the write mid-file (RLIMIT_FSIZE,
    EFBIG), as a full disk refuses it with ENOSPC."""
    lake = Lake(tmp_path)
    lake.write_version("medicine", "cases", _frame("small"), ["s"])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_write_over_limit, args=(str(tmp_path), 512 * 1024, out))
    child.start()
    child.join(120)
    error = out.get(timeout=5)
    assert child.exitcode == 0 and error != "written"
    assert "too large" in error.lower() or "os error 27" in error.lower(), error
    visible, rows = lake.versions("medicine", "cases"), lake.scan("medicine", "cases").collect()
    assert visible == ["v00001"] and rows.height == 3
    assert not list((tmp_path / "medicine" / "cases").glob(".tmp-*"))
    record(
        "a write refused by the OS mid-file (RLIMIT_FSIZE)",
        1,
        int(visible == ["v00001"]),
        3 - rows.height,
    )


HOSTILE = ["../outside", "/etc", "a/b", "..", ".hidden", "v00001/../../x", "", "x" * 200, "a\x00b"]


def test_names_from_parameters_never_reach_outside_the_lake(tmp_path: Path, record) -> None:
    """A domain, version or run id taken from a parameter is one plain path component; a
    state key built from an MLflow experiment name stays inside ``_state``."""
    from domains.errors import PonderError
    from tasks.infer import load_cases

    root = tmp_path / "lake"
    lake = Lake(root)
    lake.write_version("medicine", "cases", _frame("a"), ["t"])
    (tmp_path / "secret.json").write_text("{}")
    ctx = dataclasses.replace(StageContext.open("medicine"), lake=lake)
    attempts = escapes = 0
    for bad in HOSTILE:
        calls = [
            (lambda b=bad: lake.info("medicine", "cases", b), "version"),
            (lambda b=bad: lake.scan(b, "cases"), "domain"),
            (lambda b=bad: lake.stage("medicine", "feedback", b), "run_id"),
        ]
        if bad:  # "lake:cases@" with nothing after the @ means the latest version
            src = f"lake:cases@{bad}"
            calls.append((lambda s=src: load_cases.fn(ctx, source=s, split=None), "version"))
        for call, field in calls:
            attempts += 1
            with pytest.raises(PonderError) as err:
                call()
            escapes += err.value.field != field
        attempts += 1
        lake.save_state("medicine", f"mlflow_feedback-{bad}", {"last_ms": 1})
        escapes += lake.state("medicine", f"mlflow_feedback-{bad}") != {"last_ms": 1}
    for absolute in (str(tmp_path / "secret"), str(root.parent / "x")):
        attempts += 1
        lake.save_state("medicine", f"mlflow_feedback-{absolute}", {"last_ms": 2})
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(root)}
    escapes += len(outside - {tmp_path / "lake", tmp_path / "secret.json"})
    assert (tmp_path / "secret.json").read_text() == "{}"
    assert escapes == 0
    assert lake.state("medicine", "feedback-pending") == {}  # plain keys keep their names
    lake.save_state("medicine", "feedback-pending", {"rows": 3})
    assert (root / "medicine" / "_state" / "feedback-pending.json").is_file()
    record(
        "path escape (domain, version, run id, state key)", attempts, attempts - escapes, escapes
    )
