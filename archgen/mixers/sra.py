"""Spatial-reduction attention (PVT, PVT-v2, Twins' GSA): every patch queries a smaller set of keys and values
made from the patch grid, which keeps attention affordable on the large grids of a pyramid's early stages.

The reduced tokens come from a strided ``sr`` conv (kernel = stride = ``sr_ratio``) and a ``norm``, or, in
PVT-v2's linear variant, from an adaptive average pool to a fixed ``pool`` x ``pool`` grid, a 1x1 ``sr`` conv,
the ``norm`` and an activation. With ``sr_ratio: 1`` and no pool it is plain attention with separate ``q`` and
``kv`` projections (timm stores it so in PVT-v2's last stage).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from archgen.base import Op, OpCtx, Part
from archgen.counting import Count, conv2d, linear, matmul
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.norms import LAYERNORM, Act, Activated, NormValue, act_field, act_parts


class SpatialReductionAttention(Activated, Op):
    """Queries from every patch (``q``); keys and values (``kv``) from the reduced grid; output ``proj``.
    Reads the patch grid (B, H, W, C); prefix tokens, in a sequence block, pass it unchanged."""

    attr = "attn"
    reads = "grid"
    label = "SRA"
    size_free = True

    kind: Literal["sra"] = Field(
        description="Spatial-reduction attention (timm PVT-v2 `Attention`, Twins `GlobalSubSampleAttn`)."
    )
    sr_ratio: int = Field(
        default=1, ge=1, le=32, description="Kernel and stride of the `sr` conv that shrinks the grid; 1: none."
    )
    linear: bool = Field(
        default=False,
        description="PVT-v2-li: keys and values from an adaptive average pool (`pool`), a 1x1 `sr` conv, the "
        "norm and the activation, instead of a strided conv.",
    )
    pool: int = Field(default=7, ge=1, le=64, description="Side of the pooled grid with `linear: true`.")
    qkv_bias: bool = Field(default=True, description="Bias of the `q` and `kv` projections.")
    norm: NormValue = Field(default=LAYERNORM, description="Norm of the reduced tokens (`norm`); `none` for none.")
    act: Act = act_field(what="Activation of the reduced tokens with `linear: true` (`act`)")

    @model_validator(mode="after")
    def _one_reduction(self) -> SpatialReductionAttention:
        if self.linear and self.sr_ratio != 1:
            raise ValueError("`linear: true` pools the grid to `pool` x `pool`; leave `sr_ratio` at 1")
        return self

    def helpers(self) -> tuple[Part, ...]:
        return act_parts(self.act) if self.linear else ()  # the activation serves the pooled variant only

    @property
    def runtime(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("sr_ratio",) if self.sr_ratio > 1 else ()  # one class for every ratio, as timm's

    @property
    def args(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("dim", "num_heads", "attn_drop", "proj_drop", *self.runtime)

    @property
    def class_name(self) -> str:  # type: ignore[override]
        return "SpatialReductionAttention" if self.reduced else "Attention"  # unreduced: plain attention

    @property
    def reduced(self) -> bool:
        """Whether keys and values come from a reduced grid (else from every patch, without `sr` or `norm`)."""
        return self.linear or self.sr_ratio > 1

    def kv_grid(self, h: int, w: int) -> tuple[int, int]:
        if self.linear:
            return self.pool, self.pool
        return h // self.sr_ratio, w // self.sr_ratio

    def check(self, c: OpCtx) -> None:
        if min(c.s.h, c.s.w) < self.sr_ratio:
            raise KindError("sr_ratio", f"{self.sr_ratio} is larger than the {c.s.h}x{c.s.w} patch grid")

    def count(self, c: OpCtx) -> Count:
        d, n = c.dim, c.s.patches
        kh, kw = self.kv_grid(c.s.h, c.s.w)
        m = kh * kw
        reduce: list[Count] = []
        if self.reduced:
            reduce.append(conv2d("sr", d, d, 1 if self.linear else self.sr_ratio, (kh, kw)))
            if self.norm is not None:
                reduce.append(self.norm.count("norm", d, m * d))
        return Count.group(
            "attn",
            [
                linear("q", d, d, n, bias=self.qkv_bias),
                linear("kv", d, 2 * d, m, bias=self.qkv_bias),
                matmul("attn_matmuls", 2 * n * m * d),  # q @ k^T and attn @ v: N x M x head_dim per head
                linear("proj", d, d, n),
                *reduce,
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, H, W, C = x.shape
        heads = c.heads
        q = tape.linear(x, C, self.qkv_bias).reshape(B, H * W, heads, C // heads).transpose(1, 2)
        kv = x
        if self.linear:
            kv = tape.conv2d(tape.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), self.pool), C, 1)
        elif self.sr_ratio > 1:
            kv = tape.conv2d(x.permute(0, 3, 1, 2), C, self.sr_ratio, self.sr_ratio)
        if self.reduced:
            kv = kv.flatten(2).transpose(1, 2)  # (B, M, C)
            kv = self.norm.memory(tape, kv) if self.norm is not None else kv
            kv = tape.act(kv, self.act) if self.linear else kv
        kv = tape.linear(kv, 2 * C, self.qkv_bias)
        k, v = kv.reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = tape.sdpa(q, k, v).transpose(1, 2).reshape(B, H, W, C)
        return tape.linear(y, C)
