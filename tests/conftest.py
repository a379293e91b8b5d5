"""Session fixtures: isolated PONDER_HOME, tiny random models, one shared vLLM engine, and
the fault table that `make reliability` prints (one row per injected fault)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
# 1 GiB of KV cache per vLLM CPU engine holds ~500k tokens of the tiny model, and lets two
# pytest-xdist workers (each with its session engine) and a test's own engine fit in RAM
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(autouse=True, scope="session")
def ponder_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session writes under its own PONDER_HOME, never the user's."""
    from models.settings import get_settings

    home = tmp_path_factory.mktemp("ponder-home")
    old = {k: os.environ.get(k) for k in ("PONDER_HOME", "PREFECT_HOME")}
    os.environ["PONDER_HOME"] = str(home)
    os.environ.pop("PREFECT_HOME", None)
    get_settings.cache_clear()
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 2-layer Llama with a byte-level BPE tokenizer and chat template."""
    from models.example import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama sequence classifier (one score) for reward-model tests."""
    from models.example import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm") / "model")


@pytest.fixture(scope="session")
def tiny_prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama token classifier (one value per token) for PRM tests."""
    from models.example import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-prm") / "model", process=True)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model: Path) -> Iterator[object]:
    """One vLLM engine over the tiny model (fp32), shared by the session and shut down after."""
    from models.engine import close_generators, get_generator
    from models.loading import ModelSpec

    engine = get_generator(ModelSpec(model=str(tiny_model), dtype="float32"), "vllm")
    yield engine
    close_generators()


@pytest.fixture(scope="session")
def prefect_harness(ponder_home: Path) -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def fresh_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A lake and inbox of this test's own (same MLflow store as the session)."""
    from models.settings import get_settings

    monkeypatch.setenv("PONDER_LAKE_ROOT", str(tmp_path / "lake"))
    (tmp_path / "inbox" / "cases").mkdir(parents=True)
    (tmp_path / "inbox" / "feedback").mkdir(parents=True)
    get_settings.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    get_settings.cache_clear()


# -- the fault table (make reliability) ---------------------------------------------
RESULTS: list[dict] = []


@pytest.fixture
def record() -> Callable[..., None]:
    """``record(fault, runs, survived, rows_lost)``, called last, after the test's assertions,
    with every figure computed from what the test observed (never a literal)."""

    def add(fault: str, runs: int, survived: int, rows_lost: int) -> None:
        RESULTS.append({"fault": fault, "runs": runs, "survived": survived, "rows_lost": rows_lost})

    return add


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its fault-table rows to the controller."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["ponder_results"] = json.dumps(RESULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001
    RESULTS.extend(json.loads(getattr(node, "workeroutput", {}).get("ponder_results", "[]")))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    _warn_untested(terminalreporter)
    if not RESULTS:
        return
    width = max(len(r["fault"]) for r in RESULTS)
    tr = terminalreporter
    tr.section("reliability: one row per injected fault")
    tr.write_line(f"{'fault':<{width}}  runs  survived  rows lost (or leaked)")
    for r in RESULTS:
        line = f"{r['fault']:<{width}}  {r['runs']:>4}  {r['survived']:>8}  {r['rows_lost']:>9}"
        tr.write_line(line)
    out = Path(config.rootpath, ".ponder", "reliability.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(RESULTS, indent=2))
    tr.write_line(f"(also written to {out})")


def _warn_untested(tr) -> None:  # noqa: ANN001
    """A skip is never silent: each one is printed as a warning that says what went untested."""
    skipped = tr.stats.get("skipped", [])
    if not skipped:
        return
    tr.section(f"WARNING: {len(skipped)} skipped, so untested in this run", sep="!", yellow=True)
    for rep in skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        tr.write_line(f"UNTESTED {rep.nodeid}: {reason.removeprefix('Skipped: ')}", yellow=True)
