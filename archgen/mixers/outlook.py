"""Outlook attention (VOLO): every k x k window re-weights its own values with weights predicted
from the window's centre token, so no query-key product is formed.

Counting convention: the ``v``, ``attn`` and ``proj`` linears and the weighted sum inside each
window (a batched (k^2 x k^2) @ (k^2 x head_dim) matmul, which FlopCounterMode sees as ``bmm``)
are MACs. Unfold (copying the k^2 neighbours) and fold (adding overlapping windows back) move
data only and cost nothing, like the average pool, the softmax and the scale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul
from archgen.errors import KindError
from archgen.memory import T, Tape


class OutlookAttention(Op):
    """Attention over k x k windows of the patch grid, predicted by a linear layer (dim -> k^4 * heads).
    In a block whose tokens are a sequence, the prefix tokens pass it unchanged."""

    attr = "attn"
    reads = "grid"
    args = ("dim", "num_heads", "attn_drop", "proj_drop")
    class_name = "OutlookAttention"
    label = "Outlook"

    kind: Literal["outlook"] = Field(description="VOLO outlook attention (timm `OutlookAttention`).")
    kernel_size: int = Field(default=3, ge=1, le=15, description="Window side k.")
    padding: int = Field(default=1, ge=0, le=7, description="Zero padding of the value grid on every side.")
    stride: int = Field(default=2, ge=1, le=15, description="Step between window centres; also the pooling window.")
    qkv_bias: bool = Field(default=False, description="Bias on the value projection `v`.")

    def windows(self, h: int, w: int) -> tuple[int, int]:
        """Window centres (h, w): the pooled grid, which must equal the unfolded one."""
        k, p, st = self.kernel_size, self.padding, self.stride
        pooled = (-(-h // st), -(-w // st))
        unfolded = ((h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1)
        if pooled != unfolded:
            raise KindError(
                "kernel_size",
                f"kernel {k}, padding {p}, stride {st} give {unfolded[0]}x{unfolded[1]} windows on a "
                f"{h}x{w} grid but the pooled grid is {pooled[0]}x{pooled[1]}",
            )
        return pooled

    def check(self, c: OpCtx) -> None:
        if self.padding >= self.kernel_size:
            raise KindError("padding", f"{self.padding} must be smaller than the window {self.kernel_size}")
        self.windows(c.s.h, c.s.w)

    def count(self, c: OpCtx) -> Count:
        h, w = self.windows(c.s.h, c.s.w)
        kk = self.kernel_size**2
        n, windows = c.s.patches, h * w
        return Count.group(
            "attn",
            [
                linear("v", c.dim, c.dim, n, bias=self.qkv_bias),
                linear("attn", c.dim, kk * kk * c.heads, windows),
                # each window: (heads, k^2, k^2) @ (heads, k^2, head_dim) = k^4 * dim MACs
                matmul("weighted_sum", windows * kk * kk * c.dim),
                linear("proj", c.dim, c.dim, n),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, H, W, C = x.shape
        k, p, s = self.kernel_size, self.padding, self.stride
        h, w = (H - 1) // s + 1, (W - 1) // s + 1
        heads, d = c.heads, C // c.heads
        centre = tape.avg_pool2d(x.permute(0, 3, 1, 2), s, s, ceil_mode=True).permute(0, 2, 3, 1)
        attn = tape.linear(centre, k**4 * heads).reshape(B, h * w, heads, k * k, k * k)
        attn = tape.softmax(tape.pointwise(attn))
        v = tape.pad(tape.linear(x, C), (0, 0, p, p, p, p)).reshape(B, H + 2 * p, W + 2 * p, heads, d)
        windows = [v[:, i : i + s * h : s, j : j + s * w : s] for i in range(k) for j in range(k)]
        v = tape.stack(windows, dim=4).reshape(B, h * w, heads, k * k, d)
        x = tape.matmul(attn, v)  # the fold adds its result into a zero grid: nothing more saved
        out = tape.zeros((B, H + 2 * p, W + 2 * p, heads, d), like=x)
        return tape.linear(out[:, p : p + H, p : p + W].reshape(B, H, W, C), C)  # a copy where p > 0
