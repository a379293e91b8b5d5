"""Every numeric knob of every stage is bounded at construction (issue 20 item 11): a value
no real run needs fails before any model loads, naming the field and the bound."""

from __future__ import annotations

import inspect
import math
import typing

import annotated_types as at
import pytest
from pydantic import BaseModel, ValidationError

from flows.collect import CollectParams
from flows.evaluate_promote import EvaluateParams
from flows.finetune import FinetuneParams
from flows.infer import InferParams
from flows.pipeline import PipelineParams
from flows.refresh_reward import RefreshParams

STAGES = (CollectParams, InferParams, RefreshParams, FinetuneParams, EvaluateParams)


def _numeric_fields(model: type[BaseModel], seen: set) -> list[tuple[str, object]]:
    """(model.field, FieldInfo) of every int/float field, nested models included."""
    if model in seen:
        return []
    seen.add(model)
    out = []
    for name, f in model.model_fields.items():
        args = typing.get_args(f.annotation) or (f.annotation,)
        for a in args:
            if inspect.isclass(a) and issubclass(a, BaseModel):
                out += _numeric_fields(a, seen)
        if any(a in (int, float) for a in args):
            out.append((f"{model.__name__}.{name}", f))
    return out


def test_every_numeric_knob_has_a_lower_and_an_upper_bound() -> None:
    fields = [x for m in (*STAGES, PipelineParams) for x in _numeric_fields(m, set())]
    assert len(fields) > 40
    unbounded = [
        name
        for name, f in fields
        if not (
            any(isinstance(x, at.Ge | at.Gt) for x in f.metadata)
            and any(isinstance(x, at.Le | at.Lt) for x in f.metadata)
        )
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("model", "kwargs", "field"),
    [
        (InferParams, {"width": 10**9}, "width"),
        (InferParams, {"max_depth": 10**9}, "max_depth"),
        (InferParams, {"max_model_len": 10**9}, "max_model_len"),
        (InferParams, {"max_tokens": 10**12}, "max_tokens"),
        (InferParams, {"max_tokens": 40_000, "width": 1}, "max_tokens"),  # over one completion
        (InferParams, {"seed": -1}, "seed"),
        (RefreshParams, {"source_weights": {"rating": math.inf}}, "source_weights"),
        (RefreshParams, {"source_weights": {"rating": math.nan}}, "source_weights"),
        (RefreshParams, {"source_weights": {"rating": -1.0}}, "source_weights"),
        (EvaluateParams, {"gate": {"resamples": 10**9}}, "resamples"),
        (FinetuneParams, {"curriculum_band": (0.8, 0.2)}, "curriculum_band"),
        (FinetuneParams, {"train": {"num_generations": 10**6}}, "num_generations"),
    ],
)
def test_out_of_range_values_fail_at_construction_naming_the_field(model, kwargs, field) -> None:
    base = {"domain": "medicine"} | (
        {"dataset_version": "v00001"} if model is FinetuneParams else {}
    )
    with pytest.raises(ValidationError) as err:
        model(**base, **kwargs)
    text = str(err.value)
    assert field in text
    assert any(w in text for w in ("less than", "greater than", "finite", "below", "at most"))


@pytest.mark.parametrize(
    ("field", "weights", "valid"),
    [
        ("source_weights", {"explict": 2.0}, "explicit"),
        ("step_weights", {"human": 3.0}, "reviewer"),
    ],
)
def test_an_unknown_weight_source_names_the_valid_ones(field, weights, valid) -> None:
    with pytest.raises(ValidationError) as err:
        RefreshParams(domain="medicine", **{field: weights})
    assert field in str(err.value) and valid in str(err.value)


def test_a_dataset_source_in_the_pipeline_config_needs_its_path(tmp_path) -> None:
    """``collect: {sources: [medcalc_bench], path: FILE}`` in a pipeline config (or a
    deployment's parameters) is valid; without the path it is refused, naming it."""
    ok = PipelineParams.model_validate(
        {"domain": "medicine", "collect": {"sources": ["medcalc_bench"], "path": str(tmp_path)}}
    )
    assert ok.collect is not None and ok.collect.path == tmp_path
    collect = {"sources": ["ibm_aml"], "path": str(tmp_path), "ibm_aml": {"negative_ratio": 0.5}}
    ibm = PipelineParams.model_validate({"domain": "finance_risk", "collect": collect})
    assert ibm.collect is not None and ibm.collect.ibm_aml.negative_ratio == 0.5
    with pytest.raises(ValidationError, match="source 'medcalc_bench' needs path"):
        CollectParams(sources=["medcalc_bench"])
    with pytest.raises(ValidationError, match="source 'ibm_aml' needs path .the dataset's folder"):
        CollectParams(sources=["ibm_aml"])
    with pytest.raises(ValidationError, match="one dataset source per run"):
        CollectParams(sources=["ibm_aml", "medcalc_bench"], path=tmp_path)
    with pytest.raises(ValidationError, match="ibm_aml.negative_ratio"):
        CollectParams(sources=["ibm_aml"], path=tmp_path, ibm_aml={"negative_ratio": -1})
