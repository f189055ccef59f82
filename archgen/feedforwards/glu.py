"""Gated feed-forward (GLU family: SwiGLU, GEGLU): ``fc2(norm(act(gate) * value))``, applied to every token.

timm stores it two ways, both here: unpacked (timm ``SwiGLU``: ``fc1_g`` and ``fc1_x``, one linear each) and
packed (timm ``GluMlp`` / ``SwiGLUPacked``: one ``fc1`` of twice the width, chunked into two halves, the gate
the first half unless ``gate_last``). ``hidden`` is the gated width in both: the stage's ``mlp_ratio`` gives
``int(dim * mlp_ratio)`` as for ``mlp`` (EVA-02 writes 4 * 2 / 3), and a packed ``fc1`` is twice that wide.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear
from archgen.memory import T, Tape
from archgen.norms import Act, Activated, NormValue, act_field

# The usual names of the variants (Shazeer, GLU Variants Improve Transformer, arXiv:2002.05202)
_NAMES = {"silu": "SwiGLU", "gelu": "GeGLU", "gelu_tanh": "GeGLU", "relu": "ReGLU"}


class Glu(Activated, Op):
    """``fc1_g`` and ``fc1_x`` (or one packed ``fc1``) dim -> hidden, ``act(gate) * value``, an optional norm
    over the hidden width (EVA-02's sub-LN, timm's ``scale_mlp``), ``fc2`` hidden -> dim."""

    attr = "mlp"
    reads = "token"
    args = ("dim", "hidden", "proj_drop")

    kind: Literal["glu"] = Field(description="Gated feed-forward: SwiGLU with `act: silu`, GEGLU with `gelu`.")
    act: Act = act_field("silu", "Activation of the gate")
    packed: bool = Field(
        default=False,
        description="One `fc1` of twice the hidden width, chunked in two (timm GluMlp, SwiGLUPacked); else "
        "`fc1_g` and `fc1_x` (timm SwiGLU).",
    )
    gate_last: bool = Field(
        default=False,
        description="Packed only: the gate is the second half of `fc1` (timm GluMlp's default), not the "
        "first (SwiGLUPacked, EVA).",
    )
    norm: NormValue = Field(
        default=None, description="Norm of the gated product before `fc2` (EVA-02's sub-LN, timm `mlp.norm`)."
    )
    bias: bool = Field(default=True, description="Biases of `fc1` (or `fc1_g`, `fc1_x`) and `fc2`.")
    gate_init: bool = Field(
        default=False,
        description="timm's GluMlp/SwiGLU `init_weights` (timm's VisionTransformer calls it, EVA does not): "
        "weights ~ N(0, 1e-6) and bias 1 for `fc1_g`, or for the second half of a packed `fc1`.",
    )

    @model_validator(mode="after")
    def _gate_last_packed(self) -> Glu:
        if self.gate_last and not self.packed:
            raise ValueError("`gate_last` picks a half of the packed `fc1`; it needs `packed: true`")
        return self

    @property
    def class_name(self) -> str:  # type: ignore[override]
        return _NAMES.get(self.act, "GluMlp")

    @property
    def own_init(self) -> bool:  # type: ignore[override]
        return self.gate_init

    def count(self, c: OpCtx) -> Count:
        n, h = c.s.n, c.hidden
        fc1 = (
            [linear("fc1", c.dim, 2 * h, n, self.bias)]
            if self.packed
            else [linear("fc1_g", c.dim, h, n, self.bias), linear("fc1_x", c.dim, h, n, self.bias)]
        )
        norm = [self.norm.count("norm", h, n * h)] if self.norm is not None else []
        return Count.group("mlp", [*fc1, *norm, linear("fc2", h, c.dim, n, self.bias)])

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        h = c.hidden
        if self.packed:
            both = tape.linear(x, 2 * h)
            lead = (slice(None),) * (both.ndim - 1)
            first, second = both[(*lead, slice(0, h))], both[(*lead, slice(h, None))]  # chunk: views of one storage
            gate, value = (second, first) if self.gate_last else (first, second)
        else:
            gate, value = tape.linear(x, h), tape.linear(x, h)
        y = tape.product(tape.act(gate, self.act), value)
        y = self.norm.memory(tape, y) if self.norm is not None else y
        return tape.linear(y, c.dim)
