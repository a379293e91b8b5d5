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
