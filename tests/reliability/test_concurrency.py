"""Two runs racing for one output: two ``infer`` runs of the same job writing the same
predictions, and two promotions of one model at once. Both must end consistent."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
from concurrent.futures import ProcessPoolExecutor

import pytest

from models.registry import promote
from tasks.lake import Lake
from tests.models.test_registry import _aliases, _promote_as_evaluated, _versions
from tests.reliability.test_kill import DOMAIN, _argv, _env, _infer_params, _seed_cases

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.reliability]


def test_two_infer_runs_into_the_same_output(fresh_lake, tiny_model, record) -> None:
    lake = Lake(fresh_lake / "lake")
    ids = _seed_cases(lake, 8)
    env, argv = _env(lake.root), _argv("flows.infer:infer", _infer_params(tiny_model))
    procs = [subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    got = lake.scan(DOMAIN, "predictions").collect()
    ok = sum(p.returncode == 0 for p in procs)
    assert ok == 2, errors
    assert lake.versions(DOMAIN, "predictions") == ["v00001"]
    assert got.height == len(ids) == got["case_id"].n_unique()
    record("two infer runs, same output, at once", 2, ok, len(set(ids) - set(got["case_id"])))


def test_two_promotions_at_once_repeatedly(record) -> None:
    rounds, consistent, lost = 5, 0, 0
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        for i in range(rounds):
            name = f"ponder-race{i}-policy"
            v1, v2, v3 = _versions(name, 3)
            promote(name, v1)
            futures = [pool.submit(_promote_as_evaluated, name, v, v1) for v in (v2, v3)]
            outcomes = sorted(f.result(timeout=120) for f in futures)
            aliases = _aliases(name)
            consistent += (
                outcomes == ["refused", "won"]
                and aliases["previous"] == v1
                and (aliases["champion"] in (v2, v3))
            )
            lost += aliases.get("champion") is None  # a race that left no champion at all
    assert consistent == rounds and lost == 0
    record("two promotions of one model at once", rounds, consistent, lost)
