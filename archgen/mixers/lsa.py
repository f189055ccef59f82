"""Locally grouped self-attention (Twins-SVT's LSA): full attention inside each ws x ws window of the patch
grid, windows side by side (no shift, no overlap). A grid whose sides are not multiples of ws is zero-padded at
the bottom and right first (the padded tokens take part in the attention, as in the reference), and the padding
is dropped before the output projection.

Counting convention: ``qkv`` runs on the padded grid, ``proj`` on the patches; q @ k^T and attn @ v are
(ws^2 x ws^2 x head_dim) per head and window. Padding and the window partition move data only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul
from archgen.memory import T, Tape


class LocallyGroupedAttention(Op):
    """Multi-head self-attention within non-overlapping ws x ws windows of the patch grid (timm
    ``LocallyGroupedAttn``). In a block whose tokens are a sequence, the prefix tokens pass it unchanged."""

    attr = "attn"
    reads = "grid"
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "LocallyGroupedAttention"
    label = "LocallyGrouped"

    kind: Literal["lsa"] = Field(description="Twins' locally grouped self-attention (timm `LocallyGroupedAttn`).")
    ws: int = Field(default=7, ge=2, le=64, description="Window side: attention stays inside ws x ws patches.")

    def windows(self, c: OpCtx) -> tuple[int, int]:
        """Windows down and across: the grid padded up to multiples of ws."""
        return -(-c.s.h // self.ws), -(-c.s.w // self.ws)

    def count(self, c: OpCtx) -> Count:
        d, area = c.dim, self.ws * self.ws
        h, w = self.windows(c)
        return Count.group(
            "attn",
            [
                linear("qkv", d, 3 * d, h * w * area),
                matmul("attn_matmuls", 2 * h * w * area * area * d),  # per window: ws^2 x ws^2 x head_dim per head
                linear("proj", d, d, c.s.patches),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, H, W, C = x.shape
        ws = self.ws
        h, w = self.windows(c)
        if (h * ws, w * ws) != (H, W):
            x = tape.pad(x, (0, 0, 0, w * ws - W, 0, h * ws - H))
        x = x.reshape(B, h, ws, w, ws, C).transpose(2, 3).reshape(B * h * w, ws * ws, C)  # a copy: the windows
        q, k, v = tape.qkv(x, c.heads)
        y = tape.sdpa(q, k, v).transpose(1, 2).reshape(B, h, w, ws, ws, C)
        y = y.transpose(2, 3).reshape(B, h * ws, w * ws, C)  # a copy: the windows back in place
        return tape.linear(y[:, :H, :W], C)
