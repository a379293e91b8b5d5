"""A real causal LM whose weights are set by hand so that greedy decoding always writes one
fixed text, then stops: a policy with known accuracy for tests that need real inference.

Every layer's output projections are zero, so the residual stream at each position is the
current token's embedding. Each token of the text gets its own basis vector, and the LM
head maps it to the next token of the text (the last one to end-of-sequence). The weights
are those of the tiny test Llama otherwise, so every backend loads it as it loads that one.
"""

from __future__ import annotations

from pathlib import Path

from models.example import save_model, tiny_config, train_tiny_tokenizer


def build_answering_lm(out_dir: Path, text: str, scale: float = 50.0) -> Path:
    """Write a Llama that answers every chat prompt with ``text`` (greedy), and its tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = train_tiny_tokenizer()
    config = tiny_config(tokenizer, 0)
    config.tie_word_embeddings = False
    model = LlamaForCausalLM(config)
    start = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, return_dict=False
    )[-1]
    chain = [start, *tokenizer.encode(text, add_special_tokens=False)]
    if len(set(chain)) != len(chain) or len(chain) > config.hidden_size:
        raise ValueError(f"{text!r} needs distinct tokens after the prompt's last one")
    targets = [*chain[1:], tokenizer.eos_token_id]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (tok, nxt) in enumerate(zip(chain, targets, strict=True)):
            model.model.embed_tokens.weight[tok, k] = 1.0
            model.lm_head.weight[nxt, k] = scale
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return save_model(model, tokenizer, out_dir)
