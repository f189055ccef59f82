"""DeepViT's re-attention: the softmax maps of all heads mixed by a learned H x H transform."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul, norm
from archgen.memory import T, Tape


class ReAttention(Op):
    """A = softmax(Q K^T / sqrt(d)) per head; A' = BN_heads(Theta A + b) (``reatten_matrix``, a 1x1 conv
    over the head axis, and ``var_norm``, BatchNorm over heads), times sqrt(d)^-1 if ``transform_scale``;
    out = A' V. There is no second softmax: the rows of A' need not sum to one."""

    attr = "attn"
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "ReAttention"
    label = "ReAttention"

    kind: Literal["reattention"] = Field(description="Re-attention (official DeepViT `ReAttention`).")
    transform_scale: bool = Field(
        default=False,
        description="Scale the mixed maps by head_dim^-0.5 (official `transform_scale`; DeepViT-S only).",
    )

    def count(self, c: OpCtx) -> Count:
        n, heads = c.s.n, c.heads
        maps = heads * n * n  # elements of the (heads, N, N) attention maps
        return Count.group(
            "attn",
            [
                Count("reatten_matrix", heads * heads + heads, heads * maps, op="conv", tensors=2),
                norm("var_norm", heads, maps, per_element=2),
                linear("qkv", c.dim, 3 * c.dim, n),
                matmul("attn_matmuls", 2 * n * n * c.dim),
                linear("proj", c.dim, c.dim, n),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, N, C = x.shape
        H = c.heads
        q, k, v = tape.qkv(x, H)
        attn = tape.softmax(tape.pointwise(tape.matmul(q, k.transpose(-2, -1))))  # (B, heads, N, N)
        attn = tape.batch_norm(tape.conv2d(attn, H, 1))  # reatten_matrix, var_norm
        if self.transform_scale:
            attn = tape.pointwise(attn)
        return tape.linear(tape.matmul(attn, v).transpose(1, 2).reshape(B, N, C), C)
