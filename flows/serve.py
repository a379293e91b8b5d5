"""Everything one machine needs to run ponder as scheduled work: the real servers.

``ponder serve`` starts a Prefect server (SQLite, loopback), an MLflow tracking server
(SQLite store, artifacts under ``PONDER_HOME``), the work pools ``ponder-cpu`` and
``ponder-gpu`` (process pools; the GPU pool runs one flow run at a time), and one process
worker per pool whose flow runs see the servers through their environment. The addresses
go to ``<home>/serve.json`` so that ``ponder deploy`` and other shells find them.
``ponder deploy`` applies ``deployments/prefect.yaml`` through the Prefect CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from domains.errors import PonderError
from flows.options import flow_schema, read_config, unknown_keys, validated
from models.settings import get_settings

POOLS = ("ponder-cpu", "ponder-gpu")  # the GPU pool's limit is ServeConfig.gpu_workers
ZOMBIES = "ponder: crash flow runs whose heartbeats stopped"
JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
PREFECT_FILE = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"


class ServeConfig(BaseModel):
    """What ``ponder serve`` starts, and where."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address both servers listen on.")
    prefect_port: int = Field(default=4200, ge=1, le=65535, description="Prefect API/UI port.")
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="MLflow server port.")
    workers: bool = Field(default=True, description="Start one process worker per pool.")
    poll_seconds: float = Field(default=10, gt=0, description="How often workers poll.")
    gpu_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Process workers on ponder-gpu, one flow run each (one per GPU: worker i "
        "sees CUDA_VISIBLE_DEVICES=i when there are several); the pool's concurrency limit. "
        "A fan-out infer (workers > 1) runs its children on them.",
    )
    heartbeat_seconds: int = Field(
        default=30,
        ge=30,
        le=3600,
        description="How often flow runs started by the workers send a heartbeat (Prefect's "
        "floor is 30 s). A run that misses missed_heartbeats of them is marked CRASHED by "
        "an automation, so that a fan-out parent submits its shards again when a worker dies.",
    )
    missed_heartbeats: int = Field(
        default=3,
        ge=2,
        le=20,
        description="Heartbeats a flow run may miss before the automation marks it CRASHED.",
    )
    scheduler_seconds: float = Field(
        default=60, gt=0, description="How often the Prefect scheduler creates runs."
    )
    startup_timeout: float = Field(default=180, gt=0, description="Seconds to wait per server.")
    auth: bool = Field(
        default=False,
        description="Require credentials on both servers (a team setup): MLflow's basic-auth "
        "app and Prefect's API auth string. The user and password come from "
        "PONDER_SERVE_USER / PONDER_SERVE_PASSWORD, or are generated into "
        "<home>/serve-credentials.json (mode 0600).",
    )

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"


@dataclass
class Stack:
    """The started processes, their logs, and the environment that reaches them."""

    config: ServeConfig
    logs: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict[str, str | None] | None = None) -> None:
        """Start ``cmd`` in its own session, logging to ``<logs>/<name>.log``; ``env``
        overrides this process's environment (None removes a variable)."""
        merged = {**os.environ, **(env or {})}
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        self.procs[name] = subprocess.Popen(
            cmd,
            env={k: v for k, v in merged.items() if v is not None},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def dead(self) -> dict[str, int]:
        """Processes that have exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, timeout: float = 20) -> None:
        """Terminate every process group (workers first, servers last), then kill."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                _signal_group(proc, 15)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, 9)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def check_port(host: str, port: int, option: str) -> None:
    """A clear error when something already listens where a server should."""
    with socket.socket() as sock:
        if sock.connect_ex((host, port)) == 0:
            raise PonderError(
                option,
                f"{host}:{port} is already in use",
                f"stop what listens there or pass another --{option.replace('_', '-')}",
            )


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for tests and ``--prefect-port 0``)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, name: str, stack: Stack, timeout: float) -> None:
    """Poll ``url`` until it answers 200; a dead process or the timeout is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name in stack.dead():
            raise PonderError(
                name, f"exited with code {stack.dead()[name]}", f"read {stack.logs}/{name}.log"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise PonderError(name, f"no answer from {url} in {timeout:.0f} s", f"read {stack.logs}")


def client_env(config: ServeConfig) -> dict[str, str]:
    """What a process needs to use the served stack (workers, shells, tests); with auth,
    the credentials too (Prefect's auth string, MLflow's username and password)."""
    settings = get_settings()
    env = {
        "PREFECT_API_URL": f"{config.prefect_url}/api",
        "PONDER_TRACKING_URI": config.mlflow_url,
        "MLFLOW_TRACKING_URI": config.mlflow_url,
        "PONDER_HOME": str(settings.home),
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if config.auth:
        user, password = credentials()
        env |= {
            "PREFECT_API_AUTH_STRING": f"{user}:{password}",
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
        }
    return env


def credentials() -> tuple[str, str]:
    """The served stack's (user, password): from PONDER_SERVE_USER / PONDER_SERVE_PASSWORD,
    else a generated password kept in <home>/serve-credentials.json (0600, created once)."""
    user = os.environ.get("PONDER_SERVE_USER") or "ponder"
    if os.environ.get("PONDER_SERVE_PASSWORD"):
        return user, os.environ["PONDER_SERVE_PASSWORD"]
    path = get_settings().home / "serve-credentials.json"
    _create_once(path, json.dumps({"user": user, "password": secrets.token_urlsafe(24)}))
    stored = json.loads(path.read_text())
    return stored["user"], stored["password"]


def _stored_secret(name: str) -> str:
    """A random secret kept in <home>/.<name> (0600), created on first use."""
    path = get_settings().home / f".{name}"
    _create_once(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def _create_once(path: Path, text: str) -> None:
    """Write ``text`` to a new owner-only file; an existing file (another process's) wins."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)


def _mlflow_auth_config(stack: Stack) -> Path:
    """MLflow's basic-auth settings: its user store beside ponder's, the admin user from
    ``credentials``, read access for signed-in users by default (0600: it holds the
    password until the admin user exists)."""
    user, password = credentials()
    path = stack.logs / "mlflow-auth.ini"
    path.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{get_settings().home / 'mlflow-auth.db'}\n"
        f"admin_username = {user}\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)
    return path


def start_stack(config: ServeConfig, on_step: Callable[[str], None] = lambda _: None) -> Stack:
    """Start the servers, create the pools, start the workers; stopped again on failure."""
    settings = get_settings()
    settings.apply_environment()
    check_port(config.host, config.prefect_port, "prefect_port")
    check_port(config.host, config.mlflow_port, "mlflow_port")
    logs = settings.home / "serve"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(config=config, logs=logs, env=client_env(config))
    try:
        _start_servers(stack, on_step)
        on_step("work pools " + ", ".join(POOLS))
        ensure_pools(
            stack.env["PREFECT_API_URL"],
            stack.env.get("PREFECT_API_AUTH_STRING"),
            gpu_limit=config.gpu_workers,
            crash_after=config.missed_heartbeats * config.heartbeat_seconds,
        )
        if config.workers:
            _start_workers(stack, on_step)
        write_state(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_servers(stack: Stack, on_step: Callable[[str], None]) -> None:
    cfg, settings, bin_dir = stack.config, get_settings(), Path(sys.executable).parent
    on_step(f"Prefect server on {cfg.prefect_url}")
    server_env: dict[str, str | None] = {
        "PREFECT_HOME": stack.env["PREFECT_HOME"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(cfg.scheduler_seconds),
        "PREFECT_API_URL": None,
    }
    mlflow_env: dict[str, str | None] = {JOBS: os.environ.get(JOBS, "false")}
    mlflow_app: list[str] = []
    if cfg.auth:
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = stack.env["PREFECT_API_AUTH_STRING"]
        mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] = str(_mlflow_auth_config(stack))
        mlflow_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = os.environ.get(
            "MLFLOW_FLASK_SERVER_SECRET_KEY"
        ) or _stored_secret("mlflow-flask-secret")  # signs CSRF tokens; stable across restarts
        mlflow_app = ["--app-name", "basic-auth"]
    host_port = ["--host", cfg.host, "--port"]
    stack.start(
        "prefect-server",
        [str(bin_dir / "prefect"), "server", "start", *host_port, str(cfg.prefect_port)],
        server_env,
    )
    on_step(f"MLflow server on {cfg.mlflow_url}")
    stack.start(
        "mlflow-server",
        [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{settings.home / 'mlflow.db'}",
            "--artifacts-destination",
            str(settings.artifact_root),
            *host_port,
            str(cfg.mlflow_port),
            "--workers",
            "1",
            *mlflow_app,
        ],
        # MLflow's job runner (GenAI scorers, trace archival; ponder uses neither) starts
        # about eight consumer processes of ~300 MB each; off unless the user turns it on
        mlflow_env,
    )
    wait_healthy(f"{cfg.prefect_url}/api/health", "prefect-server", stack, cfg.startup_timeout)
    wait_healthy(f"{cfg.mlflow_url}/health", "mlflow-server", stack, cfg.startup_timeout)


def _start_workers(stack: Stack, on_step: Callable[[str], None]) -> None:
    """One worker on ponder-cpu, ``gpu_workers`` on ponder-gpu (one flow run each)."""
    prefect = str(Path(sys.executable).parent / "prefect")
    cfg = stack.config
    env = {
        **stack.env,
        "PREFECT_WORKER_QUERY_SECONDS": str(cfg.poll_seconds),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(cfg.heartbeat_seconds),
    }
    on_step("worker on ponder-cpu")
    cmd = [prefect, "worker", "start", "--type", "process", "--pool"]
    stack.start("worker-ponder-cpu", [*cmd, "ponder-cpu", "--name", "ponder-cpu"], env)
    for i in range(cfg.gpu_workers):
        name = "ponder-gpu" if cfg.gpu_workers == 1 else f"ponder-gpu-{i}"
        on_step(f"worker {name} on ponder-gpu")
        gpu_env = env if cfg.gpu_workers == 1 else {**env, "CUDA_VISIBLE_DEVICES": str(i)}
        argv = [*cmd, "ponder-gpu", "--name", name, "--limit", "1"]
        stack.start(f"worker-{name}", argv, gpu_env)


def ensure_pools(
    api_url: str, auth_string: str | None = None, *, gpu_limit: int = 1, crash_after: int = 90
) -> None:
    """Create the process pools (idempotent) with the GPU pool's concurrency limit, and the
    automation that marks a flow run CRASHED when no heartbeat came for ``crash_after``
    seconds (its process or worker died): Prefect's recipe for zombie flow runs."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    limits = {"ponder-cpu": None, "ponder-gpu": gpu_limit}

    async def create() -> None:
        async with get_client() as client:
            for name, limit in limits.items():
                try:
                    await client.create_work_pool(
                        WorkPoolCreate(name=name, type="process", concurrency_limit=limit)
                    )
                except ObjectAlreadyExists:
                    await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
            for old in await client.read_automations_by_name(ZOMBIES):
                await client.delete_automation(old.id)
            await client.create_automation(_zombie_automation(crash_after))

    updates: dict = {PREFECT_API_URL: api_url}
    if auth_string:
        updates[PREFECT_API_AUTH_STRING] = auth_string
    with temporary_settings(updates):
        asyncio.run(create())


def _zombie_automation(crash_after: int):  # noqa: ANN202 (Prefect's AutomationCore)
    """After a flow run's heartbeat, expect another (or a final state) within
    ``crash_after`` seconds; otherwise set the run CRASHED."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    final = ["Completed", "Failed", "Cancelled", "Cancelling", "Crashed"]
    return AutomationCore(
        name=ZOMBIES,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in final)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {crash_after} s: its process or worker died",
            )
        ],
    )


def state_file() -> Path:
    return get_settings().home / "serve.json"


def write_state(stack: Stack) -> None:
    """The addresses and pids of the running stack (read by ``ponder deploy``)."""
    state = {
        "prefect_ui": stack.config.prefect_url,
        "mlflow_ui": stack.config.mlflow_url,
        "env": stack.env,
        "pids": {name: proc.pid for name, proc in stack.procs.items()},
        "logs": str(stack.logs),
    }
    path = state_file()  # it carries the credentials with auth: owner-only
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)


def served_env() -> dict[str, str]:
    """The environment of the stack ``ponder serve`` runs, if one is up (else empty)."""
    path = state_file()
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    try:
        with urllib.request.urlopen(f"{state['prefect_ui']}/api/health", timeout=2):  # noqa: S310
            return state["env"]
    except OSError:
        return {}


def deploy_command(names: list[str] | None = None) -> list[str]:
    """The Prefect CLI call that applies ``deployments/prefect.yaml`` (all, or by name)."""
    cmd = [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy"]
    cmd += ["--prefect-file", str(PREFECT_FILE)]
    if names:
        for name in names:
            cmd += ["--name", name]
    else:
        cmd.append("--all")
    return cmd


def check_deployments(path: Path | None = None) -> int:
    """Validate every deployment of ``path`` before any is applied: its keys against Prefect's
    own prefect.yaml model (which would ignore a typo), its parameters against the flow's
    signature, and ``params`` against the flow's params model. Returns how many were checked."""
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel

    path = path or PREFECT_FILE
    spec = read_config(path)
    top = {f.alias or n for n, f in PrefectYamlModel.model_fields.items()} | {"definitions"}
    unknown_keys(spec, top, where=path.name, key=path.name)
    for dep in spec.get("deployments") or []:
        where = f"{path.name} deployment {dep.get('name')!r}"
        unknown_keys(dep, set(DeploymentConfig.model_fields), where=where, key=str(dep.get("name")))
        _check_parameters(dep, where)
    return len(spec.get("deployments") or [])


def _check_parameters(dep: dict, where: str) -> None:
    import importlib
    import inspect

    module, _, name = str(dep.get("entrypoint")).partition(":")
    fn = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    allowed = set(inspect.signature(fn.fn).parameters)
    places = {"parameters": dep.get("parameters") or {}}
    for n, trigger in enumerate(dep.get("triggers") or []):
        places[f"triggers[{n}].parameters"] = trigger.get("parameters") or {}
    for place, values in places.items():
        unknown_keys(values, allowed, where=where, key=f"{dep['name']}.{place}")
    params = places["parameters"].get("params")
    if params is not None:
        validated(flow_schema(fn), params, where=where, key=f"{dep['name']}.parameters.params")


def deploy(names: list[str] | None = None) -> subprocess.CompletedProcess:
    """Apply the deployments against the Prefect API in the environment or of ``ponder
    serve``; run from the repository root so entrypoints and the working directory resolve.
    Every deployment of the file is validated first (:func:`check_deployments`)."""
    check_deployments()
    env = {**served_env(), **{k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}}
    if not env.get("PREFECT_API_URL"):
        raise PonderError(
            "PREFECT_API_URL",
            "no Prefect server to deploy to (not set, and no `ponder serve` running)",
            "run `ponder serve` in another shell, or export PREFECT_API_URL",
        )
    return subprocess.run(
        deploy_command(names),
        cwd=PREFECT_FILE.parent.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
