"""The thought tree every search strategy builds and returns.

Each node is one reasoning step (or a whole completion for sampling strategies). Nodes are
kept in a flat list with parent links so trees serialize to JSON/Parquet as they are, and
a person can walk from the root to see which step went wrong.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, PrivateAttr

from domains.calc import CalcCall


class Node(BaseModel):
    """One step in the tree (DESIGN.md section 2)."""

    id: int = Field(description="Index in the tree's node list.")
    parent: int | None = Field(description="Parent node id; None for the root.")
    depth: int = Field(description="0 for the root (the prompt), 1 for first steps, ...")
    text: str = Field(default="", description="Step text as generated.")
    token_ids: list[int] = Field(default_factory=list, description="Step token ids.")
    n_tokens: int = Field(default=0, description="Generated tokens in this step.")
    finish_reason: str | None = Field(default=None, description="stop or length.")
    logprob: float = Field(default=0.0, description="Cumulative logprob of the step.")
    prm_score: float | None = Field(default=None, description="Step scorer output.")
    value: float = Field(default=0.0, description="Mean backed-up value (MCTS).")
    visits: int = Field(default=0, description="Visit count (MCTS).")
    prior: float | None = Field(default=None, description="PUCT prior.")
    terminal: bool = Field(default=False, description="Ends the reasoning.")
    answer: str | None = Field(default=None, description="Parsed answer key if terminal.")
    calls: list[CalcCall] = Field(
        default_factory=list,
        description="Calculator calls in this step (expression, result, error).",
    )
    n_inserted: int = Field(default=0, description="Of n_tokens, those a tool inserted.")
    stop_reason: str | None = Field(
        default=None, description="Why the step was stopped early (call limit, token cap)."
    )


class ThoughtTree(BaseModel):
    """All nodes of one problem's search."""

    prompt_token_ids: list[int] = Field(description="Root prompt as token ids.")
    nodes: list[Node] = Field(default_factory=list)
    _kids: dict[int, list[int]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _: object) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, depth=0))
        for n in self.nodes[1:]:
            self._kids.setdefault(n.parent, []).append(n.id)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, **fields: object) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, **fields)
        self.nodes.append(node)
        self._kids.setdefault(parent.id, []).append(node.id)
        return node

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in self._kids.get(node.id, [])]

    def path(self, node: Node) -> list[Node]:
        """Root-exclusive path of steps ending at ``node``."""
        out = []
        while node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def token_ids(self, node: Node) -> list[int]:
        """Prompt + every step's token ids down to ``node`` (token-identical prefix)."""
        ids = list(self.prompt_token_ids)
        for step in self.path(node):
            ids.extend(step.token_ids)
        return ids

    def text(self, node: Node) -> str:
        return "".join(step.text for step in self.path(node))

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes[1:] if n.id not in self._kids]

    @property
    def tokens_generated(self) -> int:
        return sum(n.n_tokens for n in self.nodes)


def aggregate(scores: list[float], how: str) -> float:
    """Path score from step scores: last, min or prod."""
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    raise ValueError(f"unknown score aggregation {how!r}; use last, min or prod")
