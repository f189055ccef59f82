"""Multi-head self-attention over all tokens, with the fused scaled-dot-product kernel."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul
from archgen.kinds.base import Kind


class MultiHeadAttention(Kind):
    """softmax(Q K^T / sqrt(d)) V per head; one ``qkv`` projection, one output ``proj``."""

    slot = "attention"
    template = "mhsa.j2"
    imports = ("import torch.nn.functional as F",)

    kind: Literal["mhsa"] = Field(description="Standard multi-head self-attention (timm `Attention`).")
    qkv_bias: bool = Field(default=True, description="Bias on the fused q, k, v projection.")

    class_name: ClassVar[str] = "Attention"

    def count(self, dim: int, heads: int, tokens: int) -> Count:
        # q @ k^T and attn @ v: each N x N x head_dim per head, i.e. N^2 * dim in all.
        matmuls = matmul("attn_matmuls", 2 * tokens * tokens * dim)
        return Count.group(
            "attn",
            [
                linear("qkv", dim, 3 * dim, tokens, bias=self.qkv_bias),
                matmuls,
                linear("proj", dim, dim, tokens),
            ],
        )
