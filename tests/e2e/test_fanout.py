"""Batch inference fanned out over two workers on real servers (loopback), with one worker
killed by SIGKILL in the middle of a shard.

`ponder serve --gpu-workers 2` starts the Prefect and MLflow servers and two process workers
on ponder-gpu (one flow run each), with 30 s heartbeats and the automation that marks a run
CRASHED after two missed ones. A parent `ponder infer --workers 2` splits 4 shards between
two child runs of the infer-medicine deployment. Both children stop at the failpoint
``infer.shard.write`` (searched, not written); the test kills one worker's whole process
group (the worker and the child it runs: a host that died), then lets the other go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from tests.e2e.serving import client as _client
from tests.e2e.serving import register_tiny_base as _register_tiny_base
from tests.e2e.serving import serve

pytestmark = pytest.mark.serving
BIN = Path(sys.executable).parent
POINT = "infer.shard.write"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`ponder serve` with two GPU-pool workers whose children pause before each first write."""
    home = tmp_path_factory.mktemp("fanout")
    (home / "failpoints").mkdir()
    points = {"PONDER_FAILPOINTS": f"{POINT}=pause",
              "PONDER_FAILPOINT_DIR": str(home / "failpoints")}  # fmt: skip
    with serve(home, points, ["--gpu-workers", "2", "--missed-heartbeats", "2"]) as env:
        yield env


def _cases(path: Path, n: int) -> Path:
    from domains.base import get_domain

    rows = [
        {"family": c.family, "inputs": json.dumps(c.inputs), "truth": json.dumps(c.truth)}
        for c in get_domain("medicine").generate(n, 21, difficulty=1)
    ]
    pl.DataFrame(rows).write_csv(path)
    return path


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if proc.poll() is not None:
            raise AssertionError(f"the parent exited {proc.returncode} before {path.name}")
        time.sleep(0.5)
    raise AssertionError(f"no {path.name} in {timeout} s")


def _children(served: dict[str, str]) -> dict[str, object]:
    """Every child flow run by name (``shards-00000-00001-try1``, ...)."""
    with _client(served) as client:
        return {r.name: r for r in client.read_flow_runs() if r.name.startswith("shards-")}


# server start 300 s, a crash noticed after 60-90 s, the rest on the tiny model
@pytest.mark.timeout(1500)
def test_a_fanned_out_run_survives_a_worker_killed_mid_shard(served, tiny_model, monkeypatch):
    home = Path(served["PONDER_HOME"])
    _register_tiny_base(tiny_model, served, monkeypatch)
    done = subprocess.run(
        [str(BIN / "ponder"), "deploy"], env=served, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    src = _cases(home / "cases.csv", 8)
    argv = [str(BIN / "ponder"), "infer", "--domain", "medicine", "--input", str(src)]
    argv += ["--workers", "2", "--shard-size", "2", "--strategy", "self_consistency"]
    argv += ["--width", "2", "--max-tokens", "24", "--step-tokens", "8", "--max-depth", "3"]
    argv += ["--log-traces", "0", "--review-k", "0", "--dtype", "float32"]
    parent_env = {k: v for k, v in served.items() if not k.startswith("PONDER_FAILPOINT")}
    with open(home / "parent.out", "w") as out:
        parent = subprocess.Popen(argv, env=parent_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # 1. a child searched its first shard and waits before writing it: kill its worker
        pid = int(_wait_file(home / "failpoints" / f"{POINT}.reached", parent, 600))
        pids = json.loads((home / "serve.json").read_text())["pids"]
        victim = next(n for n, p in pids.items() if p == os.getpgid(pid))
        assert victim.startswith("worker-ponder-gpu-"), victim
        killed = next(
            r for r in _children(served).values() if str(pid) in str(r.infrastructure_pid)
        )
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        killed_at = time.time()
        (home / "failpoints" / f"{POINT}.go").write_text("go")
        # 2. the parent notices the crash, submits the shards again, and commits once
        parent.wait(900)
    finally:
        if parent.poll() is None:
            parent.kill()
    output = (home / "parent.out").read_text()
    assert parent.returncode == 0, output[-3000:]
    _check_outcome(served, home=home, killed=killed, victim=victim, killed_at=killed_at)


def _check_outcome(served, *, home: Path, killed, victim: str, killed_at: float) -> None:
    from tasks.lake import Lake

    lake = Lake(home / "lake")
    versions = lake.versions("medicine", "predictions")
    assert len(versions) == 1, versions
    info = lake.info("medicine", "predictions", versions[0])
    preds = pl.read_parquet(info.path / "part-*.parquet")
    assert preds.height == 8 and preds["case_id"].n_unique() == 8, "each case exactly once"
    # the killed child crashed, and its shards ran again on the other worker
    block = killed.name.rsplit("-try", 1)[0]
    runs = _children(served)
    assert runs[f"{block}-try1"].state.is_crashed(), runs[f"{block}-try1"].state
    again = runs[f"{block}-try2"]
    assert again.state.is_completed(), again.state
    logs = {p.stem: p.read_text() for p in home.glob("serve/worker-ponder-gpu-*.log")}
    assert len(logs) == 2
    assert str(again.id) in logs[next(n for n in logs if n != victim)], "ran elsewhere"
    assert str(again.id) not in logs[victim]
    run_dir = next((lake.dataset_dir("medicine", "predictions") / "_runs").iterdir())
    first = int(block.split("-")[1])
    assert (run_dir / f"shard-{first:05d}.parquet").stat().st_mtime > killed_at, (
        "the killed child's shard was written by its second try"
    )
    # no child wrote after the commit: the folder is fenced, every shard predates the version
    assert (run_dir / "_epoch").read_text() == f"committed {versions[0]}"
    committed = min(p.stat().st_mtime for p in info.path.iterdir())
    written = [p.stat().st_mtime for p in run_dir.glob("*.parquet")]
    assert len(written) == 8 and max(written) <= committed
