"""Outlook attention (VOLO): every k x k window re-weights its own values with weights predicted
from the window's centre token, so no query-key product is formed.

Counting convention: the ``v``, ``attn`` and ``proj`` linears and the weighted sum inside each
window (a batched (k^2 x k^2) @ (k^2 x head_dim) matmul, which FlopCounterMode sees as ``bmm``)
are MACs. Unfold (copying the k^2 neighbours) and fold (adding overlapping windows back) move
data only and cost nothing, like the average pool, the softmax and the scale.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul
from archgen.errors import KindError
from archgen.kinds.base import Kind, Tokens


class OutlookAttention(Kind):
    """Attention over k x k windows of a token grid, predicted by a linear layer (dim -> k^4 * heads)."""

    slot = "grid_attention"
    template = "outlook.j2"
    imports = ("import torch.nn.functional as F",)

    kind: Literal["outlook"] = Field(description="VOLO outlook attention (timm `OutlookAttention`).")
    kernel_size: int = Field(ge=1, le=15, description="Window side k.")
    padding: int = Field(ge=0, le=7, description="Zero padding of the value grid on every side.")
    stride: int = Field(ge=1, le=15, description="Step between window centres; also the pooling window.")
    qkv_bias: bool = Field(default=False, description="Bias on the value projection `v`.")

    class_name: ClassVar[str] = "OutlookAttention"

    def windows(self, s: Tokens) -> tuple[int, int]:
        """Window centres (h, w): the pooled grid, which must equal the unfolded one."""
        k, p, st = self.kernel_size, self.padding, self.stride
        pooled = (-(-s.h // st), -(-s.w // st))
        unfolded = ((s.h + 2 * p - k) // st + 1, (s.w + 2 * p - k) // st + 1)
        if pooled != unfolded:
            raise KindError(
                "kernel_size",
                f"kernel {k}, padding {p}, stride {st} give {unfolded[0]}x{unfolded[1]} windows on a "
                f"{s.h}x{s.w} grid but the pooled grid is {pooled[0]}x{pooled[1]}",
            )
        return pooled

    def check(self, s: Tokens, heads: int) -> None:
        if s.layout != "grid":
            raise KindError("kind", f"outlook attention needs a token grid, got a {s.layout}")
        if self.padding >= self.kernel_size:
            raise KindError("padding", f"{self.padding} must be smaller than the window {self.kernel_size}")
        self.windows(s)

    def count(self, s: Tokens, heads: int) -> Count:
        h, w = self.windows(s)
        kk = self.kernel_size**2
        n, windows = s.h * s.w, h * w
        return Count.group(
            "attn",
            [
                linear("v", s.dim, s.dim, n, bias=self.qkv_bias),
                linear("attn", s.dim, kk * kk * heads, windows),
                # each window: (heads, k^2, k^2) @ (heads, k^2, head_dim) = k^4 * dim MACs
                matmul("weighted_sum", windows * kk * kk * s.dim),
                linear("proj", s.dim, s.dim, n),
            ],
        )
