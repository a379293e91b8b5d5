"""Gathering a run's shards into one predictions version: exactly the shards asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from domains.errors import PonderError
from tasks.infer import gather_shards

SHARDS = [["c1", "c2"], ["c3", "c4"], ["c5"]]


def _write(out: Path, index: int, ids: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"case_id": c, "run_key": "k", "correct": None if c == "c5" else True} for c in ids]
    pl.DataFrame(rows).write_parquet(out / f"shard-{index:05d}.parquet")
    trees = [{"case_id": c, "tree": "{}"} for c in ids]
    pl.DataFrame(trees).write_parquet(out / f"trees-{index:05d}.parquet")


def test_every_shard_is_gathered_once_even_when_one_arrives_twice(tmp_path: Path) -> None:
    for i, ids in enumerate(SHARDS):
        _write(tmp_path, i, ids)
    _write(tmp_path, 1, SHARDS[1])  # a retried child delivers shard 1 again
    _write(tmp_path, 7, ["c1", "c9"])  # left by a run with another shard size: not asked for
    lazy_frame, lazy_trees = gather_shards(tmp_path, SHARDS)
    frame, trees = lazy_frame.collect(), pl.concat(lazy_trees).collect()
    assert frame["case_id"].to_list() == ["c1", "c2", "c3", "c4", "c5"]
    assert trees["case_id"].to_list() == frame["case_id"].to_list()


def test_a_case_given_to_two_shards_is_committed_once(tmp_path: Path) -> None:
    shards = [["c1", "c2"], ["c2", "c3"]]
    for i, ids in enumerate(shards):
        _write(tmp_path, i, ids)
    lazy_frame, lazy_trees = gather_shards(tmp_path, shards)
    assert lazy_frame.collect()["case_id"].to_list() == ["c1", "c2", "c3"]
    assert pl.concat(lazy_trees).collect()["case_id"].to_list() == ["c1", "c2", "c3"]


def test_a_missing_or_foreign_shard_fails_the_commit_with_its_name(tmp_path: Path) -> None:
    _write(tmp_path, 0, SHARDS[0])
    _write(tmp_path, 2, ["c5", "c6"])  # shard 2 of another split of the cases
    with pytest.raises(PonderError, match=r"2 of 3 shards .*: shard-00001, shard-00002") as err:
        gather_shards(tmp_path, SHARDS)
    assert "finished shards are reused" in str(err.value)


def test_the_case_store_gives_back_the_same_cases_in_a_fraction_of_the_memory(
    tmp_path: Path,
) -> None:
    """A run spills its cases as JSON to an unnamed file in the lake's scratch folder and
    rebuilds them a shard at a time: the rebuilt cases equal the originals, come in the
    order asked, leave unknown ids out, and the store holds under a tenth of the memory of
    the objects (a 100,000-case run stays flat); the folder shows no file."""
    import tracemalloc

    from domains.base import get_domain
    from tasks.infer import CaseStore

    cases = get_domain("medicine").generate(300, 5, difficulty=1)
    ids = [c.id for c in cases]
    tracemalloc.start()
    store = CaseStore(cases, folder=tmp_path / "_scratch")
    held = tracemalloc.get_traced_memory()[0]
    rebuilt = store.get(ids)
    objects = tracemalloc.get_traced_memory()[0] - held
    tracemalloc.stop()
    assert rebuilt == cases and len(store) == 300 and store.ids() == ids
    assert store.get(ids[::-1]) == cases[::-1]
    assert store.get([ids[3], "no-such-case"]) == [cases[3]]
    assert held < 0.1 * objects, (held, objects)
    assert list((tmp_path / "_scratch").iterdir()) == []


def _cases_csv(path: Path, n: int) -> Path:
    import json

    from domains.base import get_domain

    cases = get_domain("medicine").generate(n, 5, difficulty=1)
    rows = [{"family": c.family, "inputs": json.dumps(c.inputs)} for c in cases]
    pl.DataFrame(rows).write_csv(path)
    return path


def test_cases_are_read_one_at_a_time_into_the_store(tmp_path: Path) -> None:
    """A file's cases go straight into the run's compact store, in id order: what the load
    holds beyond the store at its peak does not grow with the file (building every row and
    case first made it grow 4x from 500 to 2,000 cases), and a bad row is still rejected
    with its reason."""
    from tasks.context import StageContext

    ctx = StageContext.open("medicine")
    small = _load_overshoot(ctx, _cases_csv(tmp_path / "small.csv", 500))
    path = _cases_csv(tmp_path / "cases.csv", 2000)
    with path.open("a") as out:
        out.write('clinical_calc,"{""weight_kg"": -1}"\n')
    large = _load_overshoot(ctx, path)
    store, rejected, label = large.pop()
    assert len(store) == 2000 and store.ids() == sorted(store.ids())
    assert [r["row"] for r in rejected] == [2000] and label.startswith("file:cases.csv:")
    assert large[0] < 1.5 * small[0], (small[0], large[0])


def _load_overshoot(ctx: Any, path: Path) -> list[Any]:
    """[peak memory of the load beyond what it returns held, what it returned]."""
    import tracemalloc

    from tasks.infer import load_cases

    load_cases.fn(ctx, source=str(path), split=None)  # imports and caches warm
    tracemalloc.start()
    out = load_cases.fn(ctx, source=str(path), split=None)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return [peak - held, out]


def test_a_repeated_case_id_is_rejected_with_its_reason(tmp_path: Path) -> None:
    from tasks.context import StageContext
    from tasks.infer import load_cases

    path = _cases_csv(tmp_path / "cases.csv", 3)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[2]]) + "\n")
    store, rejected, _ = load_cases.fn(StageContext.open("medicine"), source=str(path), split=None)
    assert len(store) == 3
    assert len(rejected) == 1 and "repeats an earlier row" in rejected[0]["reason"]


def test_a_child_keeps_only_the_cases_of_its_shards(tmp_path: Path) -> None:
    from tasks.context import StageContext
    from tasks.infer import load_cases

    path = _cases_csv(tmp_path / "cases.csv", 20)
    ctx = StageContext.open("medicine")
    every = load_cases.fn(ctx, source=str(path), split=None)[0].ids()
    kept = load_cases.fn(ctx, source=str(path), split=None, keep=lambda i: i in every[5:9])[0]
    assert kept.ids() == every[5:9]
