"""Two-layer MLP: the feed-forward of a transformer block, applied to every token alone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear
from archgen.memory import T, Tape
from archgen.norms import Act, Activated, NormValue, act_field


class Mlp(Activated, Op):
    """``fc1`` (dim -> hidden), activation, optional ``norm`` of the hidden width, ``fc2`` (hidden -> dim),
    applied to every token (timm ``Mlp``)."""

    attr = "mlp"
    reads = "token"
    args = ("dim", "hidden", "proj_drop")
    class_name = "Mlp"
    size_free = True

    kind: Literal["mlp"] = Field(description="Token-wise MLP (timm `mlp.fc1`, `mlp.fc2`).")
    act: Act = act_field(what="Activation after `fc1` (timm `act_layer`)")
    bias: bool = Field(default=True, description="Bias on both linears (timm Mlp's `bias`).")
    norm: NormValue = Field(
        default=None, description="Norm of the hidden activations before `fc2` (timm Mlp's `norm_layer`: `mlp.norm`)."
    )

    def count(self, c: OpCtx) -> Count:
        n = c.s.n
        parts = [linear("fc1", c.dim, c.hidden, n, bias=self.bias)]
        if self.norm:
            parts.append(self.norm.count("norm", c.hidden, n * c.hidden))
        parts.append(linear("fc2", c.hidden, c.dim, n, bias=self.bias))
        return Count.group("mlp", parts)

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        x = tape.act(tape.linear(x, c.hidden, self.bias), self.act)
        if self.norm:
            x = self.norm.memory(tape, x)
        return tape.linear(x, c.dim, self.bias)
