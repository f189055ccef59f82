"""Two-layer MLP with GELU: the feed-forward of a transformer block, applied to every token alone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear
from archgen.memory import T, Tape


class Mlp(Op):
    """``fc1`` (dim -> hidden), GELU, ``fc2`` (hidden -> dim), applied to every token."""

    attr = "mlp"
    reads = "token"
    args = ("dim", "hidden", "proj_drop")
    class_name = "Mlp"

    kind: Literal["mlp"] = Field(description="Token-wise MLP (timm `mlp.fc1`, `mlp.fc2`).")

    def count(self, c: OpCtx) -> Count:
        n = c.s.n
        return Count.group("mlp", [linear("fc1", c.dim, c.hidden, n), linear("fc2", c.hidden, c.dim, n)])

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        return tape.linear(tape.gelu(tape.linear(x, c.hidden)), c.dim)
