"""Class attention (CaiT, VOLO): the class token is the only query; keys and values come from every token."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul
from archgen.memory import T, Tape


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

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, N, C = x.shape
        H = c.heads
        q = tape.linear(x[:, :1], C).view(B, 1, H, C // H).transpose(1, 2)
        if self.projections == "separate":
            k = tape.linear(x, C).view(B, N, H, C // H).transpose(1, 2)
            v = tape.linear(x, C).view(B, N, H, C // H).transpose(1, 2)
        else:
            k, v = tape.linear(x, 2 * C).view(B, N, 2, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        x = tape.sdpa(q, k, v)
        return tape.linear(x.transpose(1, 2).reshape(B, 1, C), C)
