"""The process-wide redaction key: created once, whole, even when processes race for it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path


def _race(path: str, barrier: mp.Barrier, out: mp.Queue) -> None:
    from models.redaction import _create_key

    barrier.wait()
    _create_key(Path(path))
    out.put(Path(path).read_text())


def test_racing_processes_all_read_one_whole_key(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    path = tmp_path / "home" / ".redact-key"
    procs = [ctx.Process(target=_race, args=(str(path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    keys = [out.get(timeout=5) for _ in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert len(set(keys)) == 1 and len(keys[0]) == 64  # one key, never an empty read
    assert sorted(x.name for x in path.parent.iterdir()) == [".redact-key"]  # no temp left
    assert path.stat().st_mode & 0o077 == 0
