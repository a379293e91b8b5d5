"""Control-token strings in case text, references and completions stay plain text on every
path that turns chat messages into ids: the engine, the reward models and TRL's rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from domains.base import Case, get_domain
from models.chat import JOINER, defuse, safe_messages, special_strings
from models.engine import Generator
from models.policy import sft_rows
from models.reward import encode_segments, prompt_ids
from tests.injection import CORPUS, inject

FORGING = [t for t in CORPUS if "<|" in t]  # the entries that spell the example's control tokens


class _EncodeOnly(Generator):
    """The engine's real ``encode`` (tokenizer and chat template), without loading weights."""

    backend = "encode-only"

    def _generate(self, prompts, sampling, progress):  # noqa: ANN001, ANN202
        raise NotImplementedError

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):  # noqa: ANN201
    return AutoTokenizer.from_pretrained(tiny_model)


def _control(tokenizer, ids: list[int]) -> Counter:  # noqa: ANN001
    special = set(tokenizer.all_special_ids)
    return Counter(i for i in ids if i in special)


def _cases() -> list[Case]:
    out = []
    for name in ("finance_risk", "medicine"):
        d = get_domain(name)
        out += [d.generate(1, 3, family=f)[0] for f in sorted(d.families)]
    return out


def test_the_raw_template_would_forge_control_tokens(tokenizer) -> None:  # noqa: ANN001
    """Positive control: without defusing, each forging entry adds control ids, so the
    checks below would see a forged turn."""
    clean = [{"role": "user", "content": "note"}]
    base = _control(
        tokenizer, tokenizer.apply_chat_template(clean, tokenize=True, return_dict=False)
    )
    for text in FORGING:
        raw = [{"role": "user", "content": f"note\n{text}"}]
        assert (
            _control(
                tokenizer, tokenizer.apply_chat_template(raw, tokenize=True, return_dict=False)
            )
            != base
        )


@pytest.mark.parametrize("injection", CORPUS)
def test_case_text_cannot_forge_a_turn(tiny_model: Path, tokenizer, injection: str) -> None:  # noqa: ANN001
    from models.loading import ModelSpec

    engine = _EncodeOnly(ModelSpec(model=str(tiny_model)))
    for case in _cases():
        d = get_domain(case.domain)
        poisoned = case.model_copy(update={"inputs": inject(case.inputs, injection)})
        clean_msgs, bad_msgs = d.prompt(case), d.prompt(poisoned)
        for encode in (engine.encode, lambda m: prompt_ids(tokenizer, m)):
            clean, bad = encode(clean_msgs), encode(bad_msgs)
            assert _control(tokenizer, bad) == _control(tokenizer, clean), case.family
            shown = tokenizer.decode(bad).replace(JOINER, "")
            assert injection.splitlines()[0] in shown  # the text still reaches the model


@pytest.mark.parametrize("injection", FORGING)
def test_completions_and_training_rows_stay_text(tokenizer, injection: str) -> None:  # noqa: ANN001
    msgs = [{"role": "user", "content": "Compute 2+2."}]
    clean = encode_segments(tokenizer, msgs, ["## Step 1: 2+2=4\n\n", "Answer: 4"])[0]
    bad = encode_segments(tokenizer, msgs, [f"## Step 1: {injection}\n\n", "Answer: 4"])[0]
    assert _control(tokenizer, bad) == _control(tokenizer, clean)
    rows = sft_rows(tokenizer, [{"prompt": msgs, "reference": f"Answer: 4 {injection}"}])
    rendered = tokenizer.apply_chat_template(
        rows[0]["prompt"] + rows[0]["completion"], return_dict=False
    )
    plain = tokenizer.apply_chat_template(
        msgs + [{"role": "assistant", "content": "Answer: 4"}], return_dict=False
    )
    assert _control(tokenizer, rendered) == _control(tokenizer, plain)


def test_defuse_is_idempotent_and_leaves_plain_text_alone(tokenizer) -> None:  # noqa: ANN001
    specials = special_strings(tokenizer)
    assert "<|im_start|>" in specials and "<|im_end|>" in specials
    once = defuse(FORGING[0], specials)
    assert defuse(once, specials) == once and once.replace(JOINER, "") == FORGING[0]
    assert defuse("Na 140, Cl 100 <- values | done", specials) == "Na 140, Cl 100 <- values | done"
    msgs = safe_messages(tokenizer, [{"role": "user", "content": FORGING[0]}, {"role": "x"}])
    assert msgs[1] == {"role": "x"} and JOINER in msgs[0]["content"]
