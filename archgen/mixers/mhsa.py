"""Multi-head self-attention over all tokens, with the fused scaled-dot-product kernel.

Its options are the layouts today's ViTs store it in: a fused ``qkv`` projection with or without bias, or
with a bias on q and v only (BEiT, EVA: ``q_bias``/``v_bias`` parameters, k's bias fixed at zero), separate
``q_proj``/``k_proj``/``v_proj`` (EVA-02 base and up), a norm of each head's q and k (QK-norm), a norm of the
attention output before ``proj`` (EVA's sub-LN), ``proj`` without bias (AIMv2), BEiT's learned relative
position bias (one table per attention, added to the scores: sdpa's ``attn_mask`` where the table takes no
gradient, scores computed by hand where it learns, since sdpa's fused kernels give a mask no gradient), and
rotary position embedding of the patch tokens' q and k (EVA-02, RoPE-ViT)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul, parameter
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.norms import NormValue

ARGS = ("dim", "num_heads", "attn_drop", "proj_drop")


class MultiHeadAttention(Op):
    """softmax(Q K^T / sqrt(d)) V per head; q, k, v projections, one output ``proj``."""

    attr = "attn"
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

    rel_pos_bias: bool | Literal["patches"] = Field(
        default=False,
        description=(
            "BEiT's relative position bias, added to the scores: a learned bias per head for each offset between "
            "two patches (`relative_position_bias_table`, (2h-1)(2w-1) rows) and 3 for the class token (true), "
            "or for tokens without a class token (`patches`)."
        ),
    )

    @property
    def args(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*ARGS, "grid") if self.rel_pos_bias else ARGS

    @property
    def fixed_grid(self) -> str | None:
        if not self.rel_pos_bias:
            return None
        return "a relative position bias is built for one grid (build at img_size)"  # timm's Beit: no dynamic size

    @property
    def class_token(self) -> bool:
        """The table has the class token's 3 rows (cls to patch, patch to cls, cls to cls) as in BEiT."""
        return self.rel_pos_bias is True

    def check(self, c: OpCtx) -> None:
        if not self.rel_pos_bias:
            return
        if not c.s.patches or c.s.prefix > 1:
            what = f"{c.s.prefix} prefix tokens" if c.s.patches else "no patch tokens"
            raise KindError("rel_pos_bias", f"needs the patch grid after at most one class token, not {what}")
        if c.s.prefix != self.class_token:
            want = "true (a class token first)" if c.s.prefix else "`patches` (no class token)"
            raise KindError("rel_pos_bias", f"these tokens take {want}")

    def bias_rows(self, c: OpCtx) -> int:
        """Rows of the relative position table: each offset (dy, dx), and the class token's 3."""
        return (2 * c.s.h - 1) * (2 * c.s.w - 1) + 3 * self.class_token

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
        # the bias is gathered from the table (no MACs) and added to the scores inside the attention kernel
        bias = [parameter("relative_position_bias_table", self.bias_rows(c) * c.heads)] if self.rel_pos_bias else []
        attention = matmul("attn_matmuls", 2 * n * n * d)  # q @ k^T and attn @ v: N x N x head_dim per head
        proj = linear("proj", d, d, n, self.proj_bias)
        return Count.group("attn", [*projections, *bias, *norms, attention, *out, proj])

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
        if self.rel_pos_bias:  # gathered from the table by a buffer of indices: a new tensor, nothing saved
            y = tape.biased_attention(q, k, v, T.empty((1, c.heads, N, N), tape.itemsize))
        else:
            y = tape.sdpa(q, k, v)  # its output laid out as q: the reshape below is a view
        y = y.transpose(1, 2).reshape(B, N, C)
        if self.norm is not None:
            y = self.norm.memory(tape, y)
        return tape.linear(y, C, bias=self.proj_bias)
