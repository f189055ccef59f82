"""Multi-head self-attention over all tokens, with the fused scaled-dot-product kernel.

Its options are the layouts today's ViTs store it in: a fused ``qkv`` projection with or without bias, or
with a bias on q and v only (BEiT, EVA: ``q_bias``/``v_bias`` parameters, k's bias fixed at zero), separate
``q_proj``/``k_proj``/``v_proj`` (EVA-02 base and up), a norm of each head's q and k (QK-norm), a norm of the
attention output before ``proj`` (EVA's sub-LN), ``proj`` without bias (AIMv2), and rotary position embedding
of the patch tokens' q and k (EVA-02, RoPE-ViT)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul, parameter
from archgen.memory import T, Tape
from archgen.norms import NormValue


class MultiHeadAttention(Op):
    """softmax(Q K^T / sqrt(d)) V per head; q, k, v projections, one output ``proj``."""

    attr = "attn"
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "Attention"

    kind: Literal["mhsa"] = Field(description="Standard multi-head self-attention (timm `Attention`).")
    qkv: Literal["fused", "separate"] = Field(
        default="fused", description="One `qkv` Linear, or `q_proj`, `k_proj`, `v_proj` (EVA-02 base and up)."
    )
    qkv_bias: bool | Literal["qv"] = Field(
        default=True,
        description="Bias of the q, k, v projections; `qv`: on q and v only (BEiT, EVA: `q_bias`, `v_bias`).",
    )
    qk_norm: NormValue = Field(default=None, description="Norm of each head's queries and keys (`q_norm`, `k_norm`).")
    norm: NormValue = Field(
        default=None, description="Norm of the attention output before `proj` (EVA's sub-LN, timm `scale_norm`)."
    )
    proj_bias: bool = Field(default=True, description="Bias of the output projection `proj`.")
    rope: bool = Field(
        default=False,
        description="Rotate the patch tokens' queries and keys with the model's rotary table (`rope:`) before "
        "attention; prefix tokens keep theirs.",
    )

    @property
    def takes_rope(self) -> bool:
        return self.rope

    def biases(self) -> tuple[bool, bool, bool]:
        """Whether q, k and v have a bias."""
        qv = self.qkv_bias is not False
        return qv, self.qkv_bias is True, qv

    def count(self, c: OpCtx) -> Count:
        n, d = c.s.n, c.dim
        bq, bk, bv = self.biases()
        if self.qkv == "separate":
            projections = [linear(f"{x}_proj", d, d, n, bias=b) for x, b in zip("qkv", (bq, bk, bv), strict=True)]
        elif self.qkv_bias == "qv":
            projections = [linear("qkv", d, 3 * d, n, bias=False), parameter("q_bias", d), parameter("v_bias", d)]
        else:
            projections = [linear("qkv", d, 3 * d, n, bias=bool(self.qkv_bias))]
        head = d // c.heads
        norms = [] if self.qk_norm is None else [self.qk_norm.count(f"{x}_norm", head, n * d) for x in "qk"]
        out = [] if self.norm is None else [self.norm.count("norm", d, n * d)]
        attention = matmul("attn_matmuls", 2 * n * n * d)  # q @ k^T and attn @ v: N x N x head_dim per head
        return Count.group("attn", [*projections, *norms, attention, *out, linear("proj", d, d, n, self.proj_bias)])

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, N, C = x.shape
        if self.qkv == "separate":
            q, k, v = (tape.linear(x, C, bias=b).reshape(B, N, c.heads, C // c.heads).transpose(1, 2)
                       for b in self.biases())  # fmt: skip
        else:
            q, k, v = tape.qkv(x, c.heads)
        if self.qk_norm is not None:
            q, k = self.qk_norm.memory(tape, q), self.qk_norm.memory(tape, k)
        if self.rope:
            assert tape.rope is not None, "the rotary table is traced before the blocks that use it"
            p = N - tape.rope.shape[-2]  # prefix tokens: no rows in the table
            q, k = (tape.cat([t[:, :, :p], tape.rotate(t[:, :, p:], tape.rope)], dim=2) for t in (q, k))
        y = tape.sdpa(q, k, v).transpose(1, 2).reshape(B, N, C)  # a view of the attention output
        if self.norm is not None:
            y = self.norm.memory(tape, y)
        return tape.linear(y, C, bias=self.proj_bias)
