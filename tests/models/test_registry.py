"""Registry helpers against a real (SQLite-backed) MLflow registry."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from domains.errors import PonderError
from models.registry import (
    ModelRef,
    check_reachable,
    connect,
    describe,
    download_model,
    get_version,
    list_versions,
    model_name,
    parse_models_uri,
    promote,
    register_hf_dir,
    rollback,
)


def test_names() -> None:
    assert model_name("medicine", "prm") == "ponder-medicine-prm"
    with pytest.raises(PonderError, match="unknown model kind"):
        model_name("medicine", "critic")


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/a@champion", ModelRef("a", alias="champion")),
        ("models:/ponder-x-policy/3", ModelRef("ponder-x-policy", version="3")),
    ],
)
def test_parse(uri: str, ref: ModelRef) -> None:
    assert parse_models_uri(uri) == ref
    assert ref.uri == uri


@pytest.mark.parametrize("uri", ["models:/", "models:/a", "models:/a/latest", "models:/@x"])
def test_parse_malformed(uri: str) -> None:
    with pytest.raises(PonderError, match="malformed"):
        parse_models_uri(uri)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast() -> None:
    with pytest.raises(PonderError) as err:
        check_reachable(f"http://127.0.0.1:{_free_port()}", timeout_s=2)
    assert err.value.field == "tracking_uri"


def test_register_alias_and_download(tiny_model: Path) -> None:
    version = register_hf_dir(
        tiny_model, "ponder-test-policy", alias="challenger", tags={"ponder.test": "1"}
    )
    local = download_model("models:/ponder-test-policy@challenger")
    assert (local / "config.json").is_file() and any(local.glob("*.safetensors"))
    assert download_model(f"models:/ponder-test-policy/{version.version}") == local
    with pytest.raises(PonderError, match="no alias @champion") as err:
        download_model("models:/ponder-test-policy@champion")
    assert "challenger" in err.value.fix
    with pytest.raises(PonderError, match="no registered model"):
        download_model("models:/ponder-missing-policy@champion")


def test_failed_registration_leaves_no_version(tiny_model: Path, monkeypatch) -> None:
    import mlflow

    def boom(*args, **kwargs):
        raise RuntimeError("alias service down")

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", boom)
    with pytest.raises(RuntimeError):
        register_hf_dir(tiny_model, "ponder-half-policy", alias="champion")
    client = mlflow.MlflowClient()
    assert client.search_model_versions("name='ponder-half-policy'") == []
    # this registration's own run (by name), not FAILED runs other tests left behind
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="attributes.run_name = 'register-ponder-half-policy'",
    )
    assert len(runs) == 1 and runs["status"].tolist() == ["FAILED"]


def _versions(name: str, n: int) -> list[str]:
    """``n`` bare versions of ``name`` (alias moves need no weights)."""
    client = connect()
    client.create_registered_model(name)
    return [
        str(client.create_model_version(name, source="file:///dev/null").version) for _ in range(n)
    ]


def _aliases(name: str) -> dict[str, str]:
    return {a: str(v) for a, v in connect().get_registered_model(name).aliases.items()}


def test_promote_rollback_and_compare_and_set() -> None:
    name = "ponder-alias-policy"
    v1, v2, v3 = _versions(name, 3)
    assert promote(name, v1, reason="first") is None
    assert promote(name, v2) == v1
    assert _aliases(name) == {"champion": v2, "previous": v1}
    with pytest.raises(PonderError, match="another promotion won"):
        promote(name, v3, expect_champion=v1)
    assert _aliases(name) == {"champion": v2, "previous": v1}  # untouched
    assert rollback(name, reason="bad outputs") == (v1, v2)
    assert _aliases(name) == {"champion": v1, "previous": v2}
    assert str(get_version(parse_models_uri(f"models:/{name}@champion")).version) == v1
    tags = connect().get_model_version(name, v2).tags
    assert tags["ponder.rolled_back_reason"] == "bad outputs" and "ponder.promoted_at" in tags
    rows = [r for r in list_versions() if r["name"] == name]
    assert [(r["version"], r["aliases"]) for r in rows] == [
        (v3, []),
        (v2, ["previous"]),
        (v1, ["champion"]),
    ]
    info = describe(name)
    assert info["version"] == v1 and info["all_aliases"] == {"champion": v1, "previous": v2}
    with pytest.raises(PonderError, match="no @previous"):
        _versions("ponder-lonely-policy", 1)
        promote("ponder-lonely-policy", "1")
        rollback("ponder-lonely-policy")


def _promote_as_evaluated(name: str, version: str, expected: str) -> str:
    try:
        promote(name, version, expect_champion=expected)
        return "won"
    except PonderError as err:  # only the compare-and-set refusal counts as "refused"
        if err.field == "champion" and "another promotion won" in str(err):
            return "refused"
        return f"error: {err}"


def test_two_concurrent_promotions_leave_one_consistent_champion() -> None:
    """Two processes promote different challengers, both evaluated against v1."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    name = "ponder-race-policy"
    v1, v2, v3 = _versions(name, 3)
    promote(name, v1)
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_promote_as_evaluated, name, v, v1) for v in (v2, v3)]
        outcomes = [f.result(timeout=120) for f in futures]
    assert sorted(outcomes) == ["refused", "won"]
    winner = (v2, v3)[outcomes.index("won")]
    assert _aliases(name) == {"champion": winner, "previous": v1}
