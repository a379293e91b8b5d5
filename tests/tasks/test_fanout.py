"""The fan-out's pure parts: how shards are split among children, and the run folder's fence."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.fanout import claim, default_deployment, fenced, find_deployment, split_children


@pytest.mark.parametrize(
    ("shards", "workers", "blocks"),
    [
        (4, 2, [[0, 1], [2, 3]]),
        (5, 2, [[0, 1, 2], [3, 4]]),
        (2, 8, [[0], [1]]),
        (1, 1, [[0]]),
    ],
)
def test_children_get_contiguous_blocks_covering_every_shard_once(shards, workers, blocks):
    assert split_children(shards, workers) == blocks
    flat = [i for b in split_children(shards, workers) for i in b]
    assert flat == list(range(shards))


def test_the_fence_lets_only_the_newest_epoch_write(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert fenced(run, "p1"), "no claim yet: no child may write"
    assert not fenced(run, None), "an in-process run is never fenced"
    claim(run, "p1")
    assert not fenced(run, "p1")
    claim(run, "p2")
    assert fenced(run, "p1") and not fenced(run, "p2")
    claim(run, "committed v00003")
    assert fenced(run, "p2"), "after the commit no child writes"


def test_no_server_means_no_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}):
        target, why = find_deployment(default_deployment("finance_risk"))
    assert target is None and "PREFECT_API_URL" in why
    assert default_deployment("finance_risk") == "infer/infer-finance-risk"


class _FakePrefect:
    """Child runs whose states follow a script: run name -> the state each poll returns."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script, self.submitted, self.runs = script, [], {}

    def run_deployment(self, deployment, *, parameters, timeout, tags, flow_run_name):
        from types import SimpleNamespace
        from uuid import uuid4

        assert timeout == 0 and any(t.startswith("ponder-run:") for t in tags)
        run = SimpleNamespace(id=uuid4(), name=flow_run_name)
        self.runs[run.id] = iter(self.script[flow_run_name])
        self.submitted.append((flow_run_name, parameters["params"]["shards"]))
        return run

    def read_flow_run(self, run_id):
        from types import SimpleNamespace

        from prefect.states import Completed, Crashed, Failed, Running

        states = {"running": Running, "completed": Completed, "crashed": Crashed,
                  "failed": Failed}  # fmt: skip
        return SimpleNamespace(state=states[next(self.runs[run_id])](message="scripted"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _children(monkeypatch, script: dict[str, list[str]], retries: int):
    import prefect.client.orchestration as orchestration
    import prefect.deployments as deployments

    from tasks.fanout import Children

    fake = _FakePrefect(script)
    monkeypatch.setattr(deployments, "run_deployment", fake.run_deployment)
    monkeypatch.setattr(orchestration, "get_client", lambda sync_client: fake)
    kids = Children(deployment="dep", key="k1", retries=retries, poll_s=0,
                    blocks={"a": [0, 1], "b": [2, 3]},
                    params_for=lambda block: {"shards": block})  # fmt: skip
    for name in kids.blocks:
        kids.submit(name)
    return kids, fake


def test_a_crashed_child_is_submitted_again_with_the_same_shards(monkeypatch) -> None:
    script = {"a-try1": ["running", "crashed"], "a-try2": ["running", "completed"],
              "b-try1": ["running", "running", "completed"]}  # fmt: skip
    kids, fake = _children(monkeypatch, script, retries=1)
    done = []
    kids.wait(on_done=lambda d, t: done.append((d, t)))
    assert fake.submitted == [("a-try1", [0, 1]), ("b-try1", [2, 3]), ("a-try2", [0, 1])]
    assert done[-1] == (2, 2)


def test_a_child_that_crashes_too_often_or_fails_stops_the_parent(monkeypatch) -> None:
    from domains.errors import PonderError

    script = {"a-try1": ["crashed"], "a-try2": ["crashed"], "b-try1": ["completed"]}
    kids, _ = _children(monkeypatch, script, retries=1)
    with pytest.raises(PonderError, match=r"child a \(shards \[0, 1\]\) ended CRASHED after 2"):
        kids.wait()
    script = {"a-try1": ["failed"], "b-try1": ["completed"]}
    kids, fake = _children(monkeypatch, script, retries=3)
    with pytest.raises(PonderError, match="ended FAILED after 1 attempt"):
        kids.wait()
    assert [n for n, _ in fake.submitted] == ["a-try1", "b-try1"], "a failure is not retried"
