"""Talking-heads self-attention (Shazeer et al., 2020) as in CaiT: heads mixed around the softmax."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul
from archgen.memory import T, Tape


class TalkingHeadsAttention(Op):
    """Like ``mhsa``, but the (heads, N, N) logits pass through a heads x heads linear map ``proj_l``
    before the softmax and the weights through another, ``proj_w``, after it (no renormalisation).

    The mixed matrix has to exist, so the fused kernel cannot be used; the generated code keeps the
    heads axis where the matmuls leave it and mixes it with one batched matmul (no permutes).
    """

    attr = "attn"
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "TalkingHeadAttention"
    label = "TalkingHeads"

    kind: Literal["talking_heads"] = Field(
        description="Talking-heads attention (timm `TalkingHeadAttn`: `qkv`, `proj_l`, `proj_w`, `proj`)."
    )
    qkv_bias: bool = Field(default=True, description="Bias on the fused q, k, v projection.")

    def count(self, c: OpCtx) -> Count:
        n = c.s.n
        pairs = n * n  # one logit per (query, key) pair and head
        return Count.group(
            "attn",
            [
                linear("qkv", c.dim, 3 * c.dim, n, bias=self.qkv_bias),
                matmul("attn_matmuls", 2 * pairs * c.dim),  # q @ k^T and attn @ v
                linear("proj_l", c.heads, c.heads, pairs),
                linear("proj_w", c.heads, c.heads, pairs),
                linear("proj", c.dim, c.dim, n),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, N, C = x.shape
        H = c.heads
        q, k, v = tape.qkv(x, H)
        attn = tape.matmul(q, k.transpose(-2, -1))  # q and k^T copied to (B * heads, ...) for bmm, both saved
        attn = tape.baddbmm(attn.view(B, H, N * N)).view(B, H, N, N)  # proj_l
        attn = tape.softmax(attn)
        attn = tape.baddbmm(attn.view(B, H, N * N)).view(B, H, N, N)  # proj_w
        return tape.linear(tape.matmul(attn, v).transpose(1, 2).reshape(B, N, C), C)
