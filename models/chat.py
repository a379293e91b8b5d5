"""Case text is data: a control-token string inside a message never becomes a control token.

A patient note or a feedback text may contain ``<|im_start|>system ...``. Rendered through
a chat template and tokenized, that string would become the real ``<|im_start|>`` id and
forge a system turn, for the policy, the reward models and training alike. Every path that
renders chat messages to ids goes through :func:`safe_messages` (or :func:`defuse` for a
bare completion), which breaks each of the tokenizer's special-token strings with a word
joiner (U+2060): the text reads the same and tokenizes as plain characters.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

JOINER = "\u2060"


_SPECIALS: weakref.WeakKeyDictionary[Any, tuple[int, list[str]]] = weakref.WeakKeyDictionary()


def special_strings(tokenizer: Any) -> list[str]:
    """The tokenizer's special-token strings (named and added), longest first. Read once per
    tokenizer (and again only if its vocabulary grows): encode calls this for every prompt."""
    size = len(tokenizer)
    cached = _SPECIALS.get(tokenizer)
    if cached and cached[0] == size:
        return cached[1]
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    names = set(getattr(tokenizer, "all_special_tokens", []) or [])
    names |= {t.content for t in added.values() if getattr(t, "special", False)}
    specials = sorted((n for n in names if len(n) > 1), key=len, reverse=True)
    _SPECIALS[tokenizer] = (size, specials)
    return specials


def defuse(text: str, specials: Sequence[str]) -> str:
    """``text`` with a word joiner after the first character of every special-token string."""
    for s in specials:
        if s in text:
            text = text.replace(s, s[0] + JOINER + s[1:])
    return text


def safe_messages(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages whose string contents are defused for ``tokenizer``."""
    specials = special_strings(tokenizer)
    return [
        m | {"content": defuse(m["content"], specials)} if isinstance(m.get("content"), str) else m
        for m in messages
    ]
