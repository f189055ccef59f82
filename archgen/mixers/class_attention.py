"""Class attention (CaiT, VOLO): the class token is the only query; keys and values come from every token."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul


class ClassAttention(Op):
    """softmax(q_cls K^T / sqrt(d)) V with one query, the first token; returns that token's update only,
    so a block using it must update the class token alone (``updates: cls``).

    ``projections: separate`` is CaiT's layout (``q``, ``k``, ``v``); ``fused_kv`` is VOLO's (``kv``, ``q``).
    """

    attr = "attn"
    writes_first = True
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "ClassAttention"
    label = "ClassAttention"

    kind: Literal["class_attention"] = Field(
        description="Class attention (timm CaiT `ClassAttn`, VOLO `ClassAttention`): query from the class token."
    )
    projections: Literal["separate", "fused_kv"] = Field(
        default="separate", description="`separate` q, k, v linears (CaiT) or `fused_kv` kv and q (VOLO)."
    )
    qkv_bias: bool = Field(default=True, description="Bias on the q, k and v projections.")

    def count(self, c: OpCtx) -> Count:
        d, n = c.dim, c.s.n
        if self.projections == "separate":
            inputs = [
                linear("q", d, d, 1, bias=self.qkv_bias),
                linear("k", d, d, n, bias=self.qkv_bias),
                linear("v", d, d, n, bias=self.qkv_bias),
            ]
        else:
            inputs = [linear("kv", d, 2 * d, n, bias=self.qkv_bias), linear("q", d, d, 1, bias=self.qkv_bias)]
        # one query: q @ k^T and attn @ v are n x head_dim per head
        return Count.group("attn", [*inputs, matmul("attn_matmuls", 2 * n * d), linear("proj", d, d, 1)])
