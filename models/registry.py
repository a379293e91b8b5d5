"""MLflow registry helpers: naming, connection, logging/registering HF directories, URIs.

Every model version ponder produces is a registered MLflow model named
``ponder-<domain>-{policy,orm,prm}`` (or ``ponder-base-policy``); aliases say which one
serves (``champion``), which awaits evaluation (``challenger``) and the rollback target
(``previous``). Stages are never used. ``models:/`` URIs are resolved to a local,
read-only copy under ``<models_dir>/registry/<name>/<version>``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from domains.errors import PonderError
from domains.faults import failpoint
from models.settings import Settings, get_settings

log = logging.getLogger(__name__)

BASE_POLICY = "ponder-base-policy"
ALIASES = ("champion", "challenger", "previous")
MODEL_KINDS = ("policy", "orm", "prm")
EXPERIMENT = "ponder"
TRACE_EXPERIMENT = "ponder-traces"  # reviewable traces and their review queues
REGISTRATION_TAG = "ponder.registration"


def registry_lock(settings: Settings | None = None, key: str = "registry") -> Any:
    """A process lock (released by the OS if its holder dies) around registration and
    alias moves, held per PONDER_HOME and ``key`` (``promote-<model name>`` serializes the
    promotions of one model). Concurrent version creation has raced in MLflow before."""
    from filelock import FileLock

    home = Path((settings or get_settings()).home)
    home.mkdir(parents=True, exist_ok=True)
    return FileLock(str(home / f".{key}.lock"), timeout=600)


def sweep_pending(client: Any, name: str) -> list[str]:
    """Delete versions of ``name`` a killed registration left unfinished (caller holds the
    registry lock, so none of them is in progress); their version numbers."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    stale = [str(v.version) for v in found if v.tags.get(REGISTRATION_TAG) == "pending"]
    for version in stale:
        log.warning("deleting half-registered %s version %s (its writer died)", name, version)
        client.delete_model_version(name, version)
    return stale


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version an alias points at (as a string), or None when the alias is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(
    name: str,
    version: str,
    client: Any | None = None,
    expect_champion: str | None | Literal["any"] = "any",
    reason: str | None = None,
) -> str | None:
    """Make ``version`` the champion and the old champion ``previous``, serialized per
    model name. With ``expect_champion`` (a version, or None for "no champion") it is a
    compare-and-set: when another promotion moved the champion since the caller looked,
    nothing changes and a PonderError says so. Returns the old champion's version."""
    client = client or connect()
    with registry_lock(key=f"promote-{name}"):
        old = alias_version(client, name, "champion")
        if expect_champion != "any" and old != (expect_champion and str(expect_champion)):
            raise PonderError(
                "champion",
                f"{name}@champion is version {old}, not {expect_champion} as evaluated: "
                "another promotion won",
                "evaluate the challenger again against the new champion",
            )
        _move_aliases(client, name, str(version), old)
        _record(client, name, str(version), "promoted", reason)
    return old


def _move_aliases(client: Any, name: str, version: str, old: str | None) -> None:
    """champion -> version, previous -> old; restores both if the second move fails."""
    before = alias_version(client, name, "previous")
    try:
        if old is not None and old != version:
            client.set_registered_model_alias(name, "previous", old)
        client.set_registered_model_alias(name, "champion", version)
    except BaseException:
        if before is not None:
            client.set_registered_model_alias(name, "previous", before)
        raise


def set_version_tags(client: Any, name: str, version: str, tags: dict[str, str]) -> None:
    """Write tags on one version (values cut to MLflow's 5,000-character limit)."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:5000])


def _record(client: Any, name: str, version: str, what: str, reason: str | None) -> None:
    import getpass
    from datetime import UTC, datetime

    tags = {
        f"ponder.{what}_at": datetime.now(UTC).isoformat(),
        f"ponder.{what}_by": getpass.getuser(),
    }
    if reason:
        tags[f"ponder.{what}_reason"] = reason
    set_version_tags(client, name, version, tags)


def rollback(name: str, client: Any | None = None, reason: str | None = None) -> tuple[str, str]:
    """``previous`` becomes ``champion`` again; the rolled-back version becomes ``previous``
    (so the rollback can itself be undone). Returns ``(new champion, rolled back)``."""
    client = client or connect()
    with registry_lock(key=f"promote-{name}"):
        prev = alias_version(client, name, "previous")
        current = alias_version(client, name, "champion")
        if prev is None or current is None:
            raise PonderError(
                "model",
                f"{name} has no {'@previous' if prev is None else '@champion'} to roll back",
                "rollback needs a champion that replaced an earlier one; see "
                "`ponder models describe NAME`",
            )
        _move_aliases(client, name, prev, current)
        _record(client, name, current, "rolled_back", reason)
    return prev, current


def list_versions(client: Any | None = None, prefix: str = "ponder-") -> list[dict[str, Any]]:
    """One row per registered version under ``prefix``: name, version, aliases, creation
    time, and the ``ponder.metric.*`` / gate tags (newest version first per model)."""
    client = client or connect()
    rows = []
    for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
        by_version: dict[str, list[str]] = {}
        for alias, v in (model.aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        for v in client.search_model_versions(f"name='{model.name}'"):
            rows.append(_row(model.name, v, sorted(by_version.get(str(v.version), []))))
    return sorted(rows, key=lambda r: (r["name"], -int(r["version"])))


def _row(name: str, v: Any, aliases: list[str]) -> dict[str, Any]:
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    metrics = {k.removeprefix("ponder.metric."): t for k, t in v.tags.items() if "metric." in k}
    return {
        "name": name,
        "version": str(v.version),
        "aliases": aliases,
        "created": created,
        "metrics": metrics,
        "decision": v.tags.get("ponder.eval.decision") or v.tags.get("ponder.gate.decision", ""),
    }


def describe(uri: str, client: Any | None = None) -> dict[str, Any]:
    """Everything the registry knows of one version (``[models:/]NAME@ALIAS|/VERSION``, or
    a bare NAME for its champion): aliases, tags, source run, and the model's other aliases."""
    client = client or connect()
    body = uri.removeprefix("models:/")
    body = body if "@" in body or "/" in body else f"{body}@champion"
    ref = parse_models_uri(f"models:/{body}")
    v = get_version(ref, client)
    aliases = client.get_registered_model(v.name).aliases or {}
    return {
        "name": v.name,
        "version": str(v.version),
        "aliases": sorted(a for a, n in aliases.items() if str(n) == str(v.version)),
        "all_aliases": {a: str(n) for a, n in sorted(aliases.items())},
        "run_id": v.run_id,
        "source": v.source,
        "status": v.status,
        "tags": dict(sorted(v.tags.items())),
    }


def model_name(domain: str, kind: str) -> str:
    """Registered name for a domain's model of one kind, e.g. ponder-medicine-prm."""
    if kind not in MODEL_KINDS:
        raise PonderError("kind", f"unknown model kind {kind!r}", f"use one of {MODEL_KINDS}")
    return f"ponder-{domain}-{kind}"


def check_reachable(
    uri: str, timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 1.0
) -> None:
    """Fail with a clear message when a tracking server does not answer ``retries + 1``
    times (backing off 1 s, 2 s, ...)."""
    if not uri.startswith(("http://", "https://")):
        return
    import time

    import requests

    for attempt in range(retries + 1):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
            return
        except requests.RequestException as err:
            if attempt < retries:
                time.sleep(backoff_s * 2**attempt)
                continue
            raise PonderError(
                "tracking_uri",
                f"the MLflow server at {uri} is unreachable ({type(err).__name__})",
                "start it (`mlflow server --host 127.0.0.1 --port 5000`) or set "
                "PONDER_TRACKING_URI to a reachable server; unset it for the local SQLite store",
            ) from None


def connect(settings: Settings | None = None) -> Any:
    """Point MLflow at the configured tracking/registry URI and return a client."""
    import mlflow

    settings = settings or get_settings()
    check_reachable(settings.tracking_uri)
    settings.apply_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)


def ui_address(experiment_id: str) -> str | None:
    """The experiment's page in the MLflow UI (``<server>/#/experiments/<id>``) when the
    tracking URI is a server; None for a local store, which has no UI address."""
    import mlflow

    server = mlflow.get_tracking_uri().rstrip("/")
    if not server.startswith(("http://", "https://")):
        return None
    return f"{server}/#/experiments/{experiment_id}"


def ensure_experiment(name: str = EXPERIMENT, settings: Settings | None = None) -> str:
    """Experiment id (now the active one), created with artifacts under the configured
    artifact root when missing."""
    import mlflow

    settings = settings or get_settings()
    client = connect(settings)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        # active too: a fresh process would otherwise log its runs to "Default"
        mlflow.set_experiment(experiment_id=existing.experiment_id)
        return existing.experiment_id
    local = not settings.tracking_uri.startswith(("http://", "https://"))
    location = Path(settings.artifact_root, name).as_uri() if local else None
    exp_id = client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@dataclass(frozen=True)
class ModelRef:
    """A parsed models:/ URI."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        tail = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"models:/{self.name}{tail}"


def parse_models_uri(uri: str) -> ModelRef:
    """Split models:/NAME@ALIAS or models:/NAME/VERSION; anything else is an error."""
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return ModelRef(name=name, alias=alias)
    elif "/" in body:
        name, version = body.split("/", 1)
        if name and version.isdigit():
            return ModelRef(name=name, version=version)
    raise PonderError(
        "model",
        f"malformed registry URI {uri!r}",
        "use models:/NAME@ALIAS (e.g. @champion) or models:/NAME/VERSION",
    )


def get_version(ref: ModelRef, client: Any | None = None) -> Any:
    """The ModelVersion a reference points at, with errors that list what does exist."""
    from mlflow.exceptions import MlflowException

    client = client or connect()
    try:
        registered = client.get_registered_model(ref.name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models()]
        raise PonderError(
            "model",
            f"no registered model named {ref.name!r}",
            f"use one of {names or '[] (register one first)'}",
        ) from None
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException:
        what = f"alias @{ref.alias}" if ref.alias else f"version {ref.version}"
        have = sorted(registered.aliases) if ref.alias else _versions(client, ref.name)
        raise PonderError(
            "model", f"{ref.name} has no {what}", f"use one of {have or '[]'}"
        ) from None


def _versions(client: Any, name: str) -> list[str]:
    return sorted(v.version for v in client.search_model_versions(f"name='{name}'"))


def download_model(uri: str, settings: Settings | None = None) -> Path:
    """Local Hugging Face directory for a models:/ URI, downloaded once per version."""
    import mlflow

    settings = settings or get_settings()
    client = connect(settings)
    version = get_version(parse_models_uri(uri), client)
    target = Path(settings.models_dir, "registry", version.name, str(version.version))
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            staged = Path(tmp, "dl")
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{version.name}/{version.version}", dst_path=str(staged)
            )
            hf_dir = staged / "model" if (staged / "model").is_dir() else staged
            hf_dir.rename(target)
    return target


def register_hf_dir(
    path: Path,
    name: str,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    *,
    run_name: str | None = None,
    task: str = "text-generation",
) -> Any:
    """Log a Hugging Face directory with the transformers flavor, register it, set an alias.

    The run is marked FAILED and a version created without its alias is deleted when a
    later step fails, so the registry never holds a half-registered model. A process
    killed between creating the version and finishing it (no except clause runs on
    ``kill -9``) leaves a version tagged ``ponder.registration=pending``; the next
    registration of that name deletes it first. Inside an active
    run (a training flow) the registration is a nested run. ``task`` is the transformers
    pipeline task: text-generation (policy), text-classification (ORM),
    token-classification (PRM).
    """
    import mlflow

    failpoint("registry.before_register")
    connect()
    ensure_experiment()
    client = mlflow.MlflowClient()
    nested = mlflow.active_run() is not None
    with (
        registry_lock(),
        mlflow.start_run(run_name=run_name or f"register-{name}", nested=nested) as run,
    ):
        try:  # a version made but not completed is deleted inside
            version = _log_and_register(client, path, name, alias=alias, tags=tags, task=task)
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
    log.info("registered %s version %s (run %s)", name, version.version, run.info.run_id)
    return version


def _log_and_register(
    client: Any,
    path: Path,
    name: str,
    *,
    alias: str | None,
    tags: dict[str, str] | None,
    task: str,
) -> Any:
    """Inside the registration run: log the model, register it pending, alias, complete."""
    import mlflow
    import torch
    import transformers

    reqs = [f"transformers=={transformers.__version__}", f"torch=={torch.__version__}"]
    info = mlflow.transformers.log_model(
        transformers_model=str(path), task=task, name="model", pip_requirements=reqs
    )
    sweep_pending(client, name)
    pending = {**(tags or {}), REGISTRATION_TAG: "pending"}
    version = mlflow.register_model(info.model_uri, name, tags=pending)
    try:
        failpoint("registry.registered")
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
        client.set_model_version_tag(name, version.version, REGISTRATION_TAG, "complete")
        mlflow.set_tags({"ponder.registered": f"{name}/{version.version}"})
    except BaseException:
        client.delete_model_version(name, version.version)
        raise
    return version
