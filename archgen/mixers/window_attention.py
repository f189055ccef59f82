"""Multi-head self-attention inside non-overlapping windows of the patch grid (Swin's W-MSA and SW-MSA).

The grid (B, H, W, C) is cut into windows of ``window`` patches, a side or (h, w) (padded at the bottom and
right to whole windows); each window attends within itself, with a learned bias per head for each offset
between two of its patches (``relative_position_bias_table``, (2h - 1)(2w - 1) rows, indexed by a
non-persistent buffer).
A shifted block first rolls the grid by half a window, so its windows straddle the previous block's borders,
and masks the pairs that the roll brought together from opposite edges (the non-persistent ``attn_mask``).
Which blocks shift is per block: with ``shift: alternate`` the blocks at odd positions in their stage do, as
in Swin. Where the grid is not larger than the window along a side, the window shrinks to the grid there and
nothing shifts along it (timm's rule), so the late stages of a small input attend globally."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul, parameter
from archgen.memory import T, Tape

ARGS = ("dim", "num_heads", "attn_drop", "proj_drop", "grid")


def fitted(window: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The window (h, w) on a grid: each side, or the grid's where the grid is not larger."""
    return min(window[0], grid[0]), min(window[1], grid[1])


def padded(size: int, window: int) -> int:
    """A grid side padded to whole windows."""
    return -(-size // window) * window


class WindowAttention(Op):
    """softmax(Q K^T / sqrt(d) + bias (+ mask)) V in each window; a fused ``qkv`` and one ``proj``."""

    attr = "attn"
    class_name = "WindowAttention"
    reads = "grid"

    kind: Literal["window_attention"] = Field(
        description="Attention within windows of the patch grid, with a relative position bias and optionally "
        "shifted windows (timm `WindowAttention` in a Swin block)."
    )
    window: (
        Annotated[int, Field(ge=1, le=64)]
        | tuple[Annotated[int, Field(ge=1, le=64)], Annotated[int, Field(ge=1, le=64)]]
    ) = Field(description="Window in patches: a side, or `[h, w]` (timm `window_size`).")
    shift: Literal["alternate", "none"] = Field(
        default="alternate",
        description="`alternate`: the blocks at odd positions in their stage roll the grid by half a window "
        "first (Swin's SW-MSA; their `attn_mask` masks pairs from opposite edges); `none`: no block shifts.",
    )
    qkv_bias: bool = Field(default=True, description="Bias of the fused `qkv` projection.")

    @field_validator("window")
    @classmethod
    def _square_as_side(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        return value[0] if isinstance(value, tuple) and value[0] == value[1] else value  # one spelling, one class

    @property
    def hw(self) -> tuple[int, int]:
        """The window's (h, w)."""
        return (self.window, self.window) if isinstance(self.window, int) else self.window

    rewindows: ClassVar[bool] = True

    @property
    def args(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*ARGS, "index") if self.shift == "alternate" else ARGS

    def windows(self, c: OpCtx) -> tuple[int, int, int]:
        """(windows, patches per window, padded patches) of the grid ``c.s``."""
        wh, ww = fitted(self.hw, (c.s.h, c.s.w))
        hp, wp = padded(c.s.h, wh), padded(c.s.w, ww)
        return (hp // wh) * (wp // ww), wh * ww, hp * wp

    def count(self, c: OpCtx) -> Count:
        d = c.dim
        wh, ww = fitted(self.hw, (c.s.h, c.s.w))
        windows, n, tokens = self.windows(c)
        return Count.group(
            "attn",
            [
                # gathered by the index buffer (no MACs), added to the scores inside the attention kernel
                parameter("relative_position_bias_table", (2 * wh - 1) * (2 * ww - 1) * c.heads),
                linear("qkv", d, 3 * d, tokens, bias=self.qkv_bias),
                matmul("attn_matmuls", windows * 2 * n * n * d),  # q @ k^T and attn @ v in each window
                linear("proj", d, d, tokens),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        """A shifted block saves the same as an unshifted one: the rolls and the mask are new tensors that no
        backward keeps (the partition copies the rolled grid; the mask joins the bias, which the scores add)."""
        B, H, W, C = x.shape
        wh, ww = fitted(self.hw, (H, W))
        hp, wp = padded(H, wh), padded(W, ww)
        if (hp, wp) != (H, W):
            x = tape.pad(x, (0, 0, 0, wp - W, 0, hp - H))
        n = wh * ww
        x = x.view(B, hp // wh, wh, wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, C)
        q, k, v = tape.qkv(x, c.heads)
        bias = T.empty((1, c.heads, n, n), tape.itemsize)  # gathered from the table (and the mask added)
        y = tape.biased_attention(q, k, v, bias).transpose(1, 2).reshape(-1, n, C)
        y = tape.linear(y, C)
        y = y.view(B, hp // wh, wp // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, hp, wp, C)
        return y[:, :H, :W]
