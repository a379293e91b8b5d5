"""Prefect tasks behind the ``infer`` flow: resolve the model, load cases, search shards.

Shards are the unit of resumption: each shard's predictions and trees are written to
``<lake>/<domain>/predictions/_runs/<run_key>/`` with a temp-file + rename, and a rerun
with the same run key (same input, model version, strategy config) skips finished shards.
When all shards exist they are committed together as a new ``predictions`` version.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from domains.base import Case, Domain, ParseFailure
from domains.errors import PonderError
from domains.faults import failpoint
from domains.loading import Rejected
from models.engine import Generator
from models.search import SearchConfig, run_search
from models.search.base import Problem, Scorer, SearchResult
from tasks.context import StageContext
from tasks.lake import tmp_beside
from tasks.report import Batch, case_inputs, case_masks, right_leaves
from tasks.review import disagreement


@task(cache_policy=NO_CACHE)  # the context is not a cache key
def resolve_model(ctx: StageContext, *, model: str | None) -> tuple[str, str, Path]:
    """(uri or path, exact version label, local dir), resolved once per run: a path, a
    ``models:/`` URI, or (None) the domain's policy champion, else the base policy's."""
    from mlflow.exceptions import MlflowException

    from models.loading import ModelSpec, resolve_model_dir
    from models.registry import BASE_POLICY, connect, get_version, model_name, parse_models_uri

    if model and not model.startswith("models:/"):
        path = resolve_model_dir(ModelSpec(model=model))
        return model, f"path:{path}", path
    candidates = (
        [model]
        if model
        else [
            f"models:/{model_name(ctx.name, 'policy')}@champion",
            f"models:/{BASE_POLICY}@champion",
        ]
    )
    client = connect()
    for uri in candidates:
        try:
            version = get_version(parse_models_uri(uri), client)
        except (PonderError, MlflowException):
            if uri == candidates[-1]:
                raise
            continue
        exact = f"models:/{version.name}/{version.version}"
        return uri, exact, resolve_model_dir(ModelSpec(model=exact))
    raise PonderError("model", "no policy model found", "run `ponder models fetch-example`")


def learned_scorer(domain: str) -> Scorer:
    """The domain's ORM and PRM champions behind the search scorer interfaces."""
    from models.prm import ProcessRM
    from models.registry import download_model, get_version, model_name, parse_models_uri
    from models.reward import OutcomeRM, RewardScorer

    models: dict[str, object] = {}
    for kind, cls in (("orm", OutcomeRM), ("prm", ProcessRM)):
        name = model_name(domain, kind)
        try:
            version = get_version(parse_models_uri(f"models:/{name}@champion"))
        except PonderError:
            continue
        path = download_model(f"models:/{name}/{version.version}")
        models[kind] = cls(path, name=f"{kind}@v{version.version}")
    if not models:
        raise PonderError(
            "scorer",
            f"no {domain} reward model has a champion",
            f"run `ponder refresh-reward --domain {domain}` or use --scorer policy_logprob",
        )
    return RewardScorer(**models)  # type: ignore[arg-type]


@task(cache_policy=NO_CACHE)
def load_cases(
    ctx: StageContext, *, source: str, split: str | None, keep: Callable[[str], bool] | None = None
) -> tuple[CaseStore, list[dict[str, Any]], str]:
    """Cases from ``lake:cases[@vNNNNN]`` or a file, read one at a time into a ``CaseStore``
    in id order (only those whose id ``keep`` accepts); returns (store, rejected rows, input
    label). No list of every case object is ever built."""
    items, label = _case_stream(ctx, source=source, split=split)
    store, rejected = CaseStore(folder=ctx.lake.scratch), []
    for item in items:
        if isinstance(item, Rejected):
            rejected.append(item.as_dict())
        elif item.id in store:
            reason = f"case id {item.id} repeats an earlier row's: each case is scored once"
            rejected.append({"row": None, "reason": reason, "raw": item.id})
        elif keep is None or keep(item.id):
            store.add(item)
    store.sort()
    return store, rejected, label


def _case_stream(
    ctx: StageContext, *, source: str, split: str | None
) -> tuple[Iterator[Case | Rejected], str]:
    lake, domain = ctx.lake, ctx.name
    if source.startswith("lake:"):
        _, _, version = source.partition("@")
        info = lake.info(domain, "cases", version) if version else lake.latest(domain, "cases")
        if info is None:
            raise PonderError(
                "input",
                f"{domain}/cases has no versions",
                "run `ponder collect` first, or pass a file path",
            )
        frame = pl.scan_parquet(info.path / "part-*.parquet")
        if split:
            frame = frame.filter(pl.col("split") == split)
        label = f"lake:{domain}/cases@{info.version}" + (f"[{split}]" if split else "")
        return (row_case(r) for r in frame.collect().iter_rows(named=True)), label
    if source.startswith("medcalc_bench:"):
        from tasks.collect import read_medcalc

        path = Path(source.partition(":")[2])
        found, rejected, _ = read_medcalc(ctx, path)
        label = f"medcalc_bench:{path.name}:{_file_digest(path)}"
        bad = (Rejected(r.get("row"), r["reason"], r.get("raw")) for r in rejected)
        return itertools.chain((c for _, c in found), bad), label
    label = f"file:{Path(source).name}:{_file_digest(Path(source))}"
    return ctx.domain.stream(Path(source)), label


class CaseStore:
    """A run's cases spilled as JSON to an unnamed temporary file (in ``folder``: the lake's
    own, since the cases are unmasked), and read back a shard or a report page at a time.
    The process holds only each id's offset: a 100,000-case run keeps about 10 MB, where
    the JSON strings took 150 MB. The file has no name, so it goes when the process does,
    even on kill -9."""

    def __init__(self, cases: Iterable[Case] = (), *, folder: Path | None = None) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (lives with the store)
        self._end = 0
        self._at: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        for case in cases:
            self.add(case)

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._at

    def add(self, case: Case) -> None:
        """Hold ``case`` (one with the same id already held is replaced)."""
        data = case.model_dump_json().encode()
        with self._lock:
            os.pwrite(self._file.fileno(), data, self._end)
            self._at[case.id] = (self._end, len(data))
            self._end += len(data)

    def drop(self, ids: Iterable[str]) -> None:
        """Forget the cases with these ids."""
        for i in ids:
            self._at.pop(i, None)

    def sort(self) -> None:
        """Put the cases in id order."""
        self._at = dict(sorted(self._at.items()))

    def ids(self) -> list[str]:
        """Every case id, in the order held."""
        return list(self._at)

    def get(self, ids: Iterable[str]) -> list[Case]:
        """The cases with these ids, in that order; an id not held is left out."""
        fd, at = self._file.fileno(), self._at
        return [Case.model_validate_json(os.pread(fd, at[i][1], at[i][0])) for i in ids if i in at]


def row_case(row: dict[str, Any]) -> Case:
    return Case(
        id=row["id"],
        domain=row["domain"],
        family=row["family"],
        difficulty=row["difficulty"],
        inputs=json.loads(row["inputs"]),
        truth=json.loads(row["truth"]) if row["truth"] else None,
        reference=row["reference"],
    )


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_key(
    input_label: str,
    model_version: str,
    strategy: str,
    cfg: SearchConfig,
    tools: list[str] | None = None,
) -> str:
    """Resume key of one run: a different model, input, search or tool set is a new run."""
    parts = [input_label, model_version, strategy, cfg.model_dump()] + ([tools] if tools else [])
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def answer_key(domain: Domain, case: Case, text: str) -> str | None:
    parsed = domain.parse(text, case)
    if isinstance(parsed, ParseFailure):
        return None
    return json.dumps(parsed.model_dump(mode="json"), sort_keys=True)


def fits(
    generator: Generator,
    domain: Domain,
    case: Case,
    cfg: SearchConfig,
    *,
    max_len: int,
    tools: list[str] | None = None,
) -> bool:
    """Whether the prompt plus one step still fits the model's context."""
    return generator.fits(domain.prompt(case, tools), max_len - cfg.step_tokens)


@task(cache_policy=NO_CACHE)  # engine and scorer are not hashable inputs
def search_shard(
    ctx: StageContext,
    *,
    index: int,
    cases: list[Case],
    strategy: str,
    cfg: SearchConfig,
    generator: Generator,
    scorer: Scorer,
    out_dir: Path,
    meta: dict[str, str],
    tools: list[str] | None = None,
    epoch: str | None = None,
) -> Path:
    """Search one shard and write its predictions + trees atomically; skip it when a shard
    of these very cases is already there (a run with another shard size left other cases
    under the same name: those are searched again). A fan-out child passes its parent's
    ``epoch`` and writes nothing once a newer parent, or the commit, fenced the folder."""
    target = out_dir / f"shard-{index:05d}.parquet"
    if _holds(target, [c.id for c in cases]):
        return target
    _check_fence(out_dir, epoch)
    d = ctx.domain
    inputs = case_inputs(d, cases)
    for shown, _ in inputs.values():  # identifiers learned before any text of these cases
        ctx.redactor.text(shown)  # leaves this process (and remembered for their answers)
    problems = [
        Problem(
            id=c.id, prompt=d.prompt(c, tools), answer_of=lambda text, c=c: answer_key(d, c, text)
        )
        for c in cases
    ]
    start = time.perf_counter()
    results = run_search(strategy, problems, cfg, generator, scorer)
    per_case = (time.perf_counter() - start) / max(len(cases), 1)
    rows = [
        _prediction(d, c, r, per_case, meta=meta, shard=target.name)
        for c, r in zip(cases, results, strict=True)
    ]
    trees = _tree_rows(ctx, cases, results, rows=rows, inputs=inputs)
    failpoint("infer.shard.write")  # searched, not yet written: a kill here loses the shard
    _check_fence(out_dir, epoch)
    _atomic_parquet(pl.DataFrame(trees), out_dir / f"trees-{index:05d}.parquet")
    _atomic_parquet(pl.DataFrame(rows, infer_schema_length=None), target)
    return target


def _tree_rows(
    ctx: StageContext,
    cases: list[Case],
    results: list[SearchResult],
    *,
    rows: list[dict[str, Any]],
    inputs: dict[str, tuple[str, str | None]],
) -> list[dict[str, Any]]:
    """Per case: its thought tree, and the texts its report shows, masked here
    (``tasks.report.case_masks``) under the redactor's fingerprint, so the parent's
    report reads them instead of masking every case again in one process."""
    trees = {r.problem_id: r.tree for r in results}
    batch = Batch(
        title="",
        predictions=pl.DataFrame(rows, infer_schema_length=None),
        trees=trees,
        texts={r.problem_id: r.text for r in results},
        inputs=inputs,
        good=right_leaves(ctx.domain, cases, trees),
    )
    masks = case_masks(batch, ctx.redactor.text)
    by = ctx.redactor.fingerprint()
    return [
        {"case_id": r.problem_id, "tree": r.tree.model_dump_json(),
         "masked": json.dumps(masks[r.problem_id]), "masked_by": by}
        for r in results
    ]  # fmt: skip


def _check_fence(out_dir: Path, epoch: str | None) -> None:
    from tasks.fanout import fenced

    if fenced(out_dir, epoch):
        raise PonderError(
            "child.epoch",
            f"a newer infer run, or its commit, took over {out_dir.name}; this child stops",
            "nothing to do: the run that holds the folder searches and commits these shards",
        )


def _prediction(
    d: Domain, case: Case, r: SearchResult, latency: float, *, meta: dict[str, str], shard: str
) -> dict[str, Any]:
    verdict = d.check(r.text, case) if case.truth is not None else None
    return {
        "case_id": case.id,
        "family": case.family,
        "difficulty": case.difficulty,
        "answer": r.answer,
        "parsed": r.answer is not None,
        "confidence": r.confidence,
        "disagreement": disagreement(r.tree, r.answer),
        "text": r.text,
        "correct": None if verdict is None else verdict.correct,
        "score": None if verdict is None else verdict.score,
        "tokens": r.tokens_generated,
        "latency_s": latency,
        "strategy": r.strategy,
        "scorer": r.scorer,
        "oracle": r.oracle,
        "generator_calls": r.generator_calls,
        "tree_ref": f"{shard.replace('shard-', 'trees-')}#{case.id}",
        "status": "ok",
        **meta,
    }


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write beside ``path`` and rename into place (two runs of one run key share the
    folder, so the temporary name is this writer's own)."""
    tmp = tmp_beside(path)
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def _shard_ids(path: Path) -> list[str] | None:
    """The case ids a shard file holds, in order (its one column read); None when the file
    is absent or damaged (then the shard is searched again)."""
    if not path.is_file():
        return None
    try:
        return pl.read_parquet(path, columns=["case_id"])["case_id"].to_list()
    except (pl.exceptions.PolarsError, OSError):
        return None


def _holds(path: Path, case_ids: list[str]) -> bool:
    """Whether the shard file at ``path`` exists and holds exactly these cases, in order."""
    return _shard_ids(path) == case_ids


def gather_shards(
    out_dir: Path, shards: list[list[str]]
) -> tuple[pl.LazyFrame, list[pl.LazyFrame]]:
    """(predictions, trees) of the run's shards 0..n-1 as lazy scans, in shard order (the
    trees as one scan per shard, which the lake writes one after another), checked
    against the cases each was given: a missing or foreign shard fails with its name (a
    partial run never looks complete), and a case that arrives twice is kept once. Only
    the case ids are read here; the rows stream into the commit, never held whole: each
    shard is checked to hold exactly the ids it was given, so a case can repeat only when
    the given shards repeat it, and only then is the (in-memory) ``unique`` pass run."""
    frames, trees, missing = [], [], []
    for i, ids in enumerate(shards):
        shard, tree = out_dir / f"shard-{i:05d}.parquet", out_dir / f"trees-{i:05d}.parquet"
        if _shard_ids(shard) != ids or _shard_ids(tree) is None:
            missing.append(f"shard-{i:05d}")
            continue
        frames.append(pl.scan_parquet(shard))
        trees.append(pl.scan_parquet(tree))
    if missing:
        raise PonderError(
            "shards",
            f"{len(missing)} of {len(shards)} shards are missing or hold other cases: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} in {out_dir}",
            "rerun infer with the same parameters: finished shards are reused",
        )
    frame = pl.concat(frames, how="diagonal_relaxed")
    if len({i for ids in shards for i in ids}) == sum(len(ids) for ids in shards):
        return frame, trees  # each shard holds exactly its own ids: no case can repeat
    once = {"subset": "case_id", "keep": "first", "maintain_order": True}
    tree = pl.concat(trees, how="diagonal_relaxed")  # shards from before masks were kept
    return frame.unique(**once), [tree.unique(**once)]  # in memory, only when needed


def run_dir(ctx: StageContext, key: str) -> Path:
    """Where run ``key`` keeps its shard files until they are committed."""
    return ctx.lake.dataset_dir(ctx.name, "predictions") / "_runs" / key


@task(cache_policy=NO_CACHE)
def commit_predictions(
    ctx: StageContext, *, out_dir: Path, sources: list[str], shards: list[list[str]]
) -> tuple[str | None, pl.DataFrame]:
    """The run's shards (``gather_shards``) streamed into one predictions version, trees
    alongside; returns the version and its rows without the answer texts (the report and
    traces read those page by page from the version)."""
    from tasks.lake import row_hash

    frame, trees = gather_shards(out_dir, shards)
    frame = frame.with_columns(row_hash(["case_id", "run_key"]))
    info = ctx.lake.write_version(
        ctx.name, "predictions", frame, sources, attachments={"trees.parquet": trees}
    )
    latest = info or ctx.lake.latest(ctx.name, "predictions")
    if latest is None:
        return None, frame.drop("text").collect()
    return latest.version, pl.scan_parquet(latest.path / "part-*.parquet").drop("text").collect()
