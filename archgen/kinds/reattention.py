"""DeepViT's re-attention: the softmax maps of all heads mixed by a learned H x H transform."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul, norm
from archgen.kinds.base import Kind


class ReAttention(Kind):
    """A = softmax(Q K^T / sqrt(d)) per head; A' = BN_heads(Theta A + b) (``reatten_matrix``, a 1x1 conv
    over the head axis, and ``var_norm``, BatchNorm over heads), times sqrt(d)^-1 if ``transform_scale``;
    out = A' V. There is no second softmax: the rows of A' need not sum to one."""

    slot = "attention"
    template = "reattention.j2"

    kind: Literal["reattention"] = Field(description="Re-attention (official DeepViT `ReAttention`).")
    transform_scale: bool = Field(
        description="Scale the mixed maps by head_dim^-0.5 (official `transform_scale`; DeepViT-S only)."
    )

    class_name: ClassVar[str] = "ReAttention"

    def count(self, dim: int, heads: int, tokens: int) -> Count:
        maps = heads * tokens * tokens  # elements of the (heads, N, N) attention maps
        return Count.group(
            "attn",
            [
                Count("reatten_matrix", heads * heads + heads, heads * maps, op="conv"),
                norm("var_norm", heads, maps, per_element=2),
                linear("qkv", dim, 3 * dim, tokens),
                matmul("attn_matmuls", 2 * tokens * tokens * dim),
                linear("proj", dim, dim, tokens),
            ],
        )
