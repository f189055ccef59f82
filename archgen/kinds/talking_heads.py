"""Talking-heads self-attention (Shazeer et al., 2020) as in CaiT: heads mixed around the softmax."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul
from archgen.kinds.base import Kind


class TalkingHeadsAttention(Kind):
    """Like ``mhsa``, but the (heads, N, N) logits pass through a heads x heads linear map ``proj_l``
    before the softmax and the weights through another, ``proj_w``, after it (no renormalisation).

    The mixed matrix has to exist, so the fused kernel cannot be used; the generated code keeps the
    heads axis where the matmuls leave it and mixes it with one batched matmul (no permutes).
    """

    slot = "attention"
    template = "talking_heads.j2"

    kind: Literal["talking_heads"] = Field(
        description="Talking-heads attention (timm `TalkingHeadAttn`: `qkv`, `proj_l`, `proj_w`, `proj`)."
    )
    qkv_bias: bool = Field(default=True, description="Bias on the fused q, k, v projection.")

    class_name: ClassVar[str] = "TalkingHeadAttention"

    def count(self, dim: int, heads: int, tokens: int) -> Count:
        pairs = tokens * tokens  # one logit per (query, key) pair and head
        return Count.group(
            "attn",
            [
                linear("qkv", dim, 3 * dim, tokens, bias=self.qkv_bias),
                matmul("attn_matmuls", 2 * pairs * dim),  # q @ k^T and attn @ v
                linear("proj_l", heads, heads, pairs),
                linear("proj_w", heads, heads, pairs),
                linear("proj", dim, dim, tokens),
            ],
        )
