"""Multi-head self-attention over all tokens, with the fused scaled-dot-product kernel."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul
from archgen.memory import T, Tape


class MultiHeadAttention(Op):
    """softmax(Q K^T / sqrt(d)) V per head; one ``qkv`` projection, one output ``proj``."""

    attr = "attn"
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "Attention"

    kind: Literal["mhsa"] = Field(description="Standard multi-head self-attention (timm `Attention`).")
    qkv_bias: bool = Field(default=True, description="Bias on the fused q, k, v projection.")

    def count(self, c: OpCtx) -> Count:
        n = c.s.n
        return Count.group(
            "attn",
            [
                linear("qkv", c.dim, 3 * c.dim, n, bias=self.qkv_bias),
                matmul("attn_matmuls", 2 * n * n * c.dim),  # q @ k^T and attn @ v: N x N x head_dim per head
                linear("proj", c.dim, c.dim, n),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, N, C = x.shape
        x = tape.sdpa(*tape.qkv(x, c.heads))
        return tape.linear(x.transpose(1, 2).reshape(B, N, C), C)  # a view of the attention output
