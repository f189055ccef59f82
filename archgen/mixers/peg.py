"""The conditional position encoding of CPVT and Twins (PEG): a depthwise conv of the patch grid, whose zero
padding tells each token where it stands; the caller adds it to its input (a residual branch, or a stage's
``insert`` between two blocks, as Twins runs it after each stage's first block)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, conv2d
from archgen.errors import KindError
from archgen.memory import T, Tape


class PosConv(Op):
    """``proj.0`` = depthwise Conv2d(dim, dim, k, padding k // 2) on the grid (timm ``PosConv``, stride 1)."""

    attr = "pos"
    reads = "grid"
    args = ("dim",)
    class_name = "PosConv"
    label = "PosConv"

    kind: Literal["peg"] = Field(description="Conditional position encoding: depthwise conv (timm Twins `PosConv`).")
    kernel: int = Field(default=3, ge=1, le=15, description="Kernel side (odd: the grid keeps its size).")

    def no_weight_decay(self) -> tuple[str, ...]:
        """A position encoding is not weight-decayed (timm's Twins: every `pos_block` parameter)."""
        return ("proj.0.weight", "proj.0.bias")

    def check(self, c: OpCtx) -> None:
        if self.kernel % 2 == 0:
            raise KindError("kernel", f"{self.kernel} is even: an odd kernel keeps the grid's size")

    def count(self, c: OpCtx) -> Count:
        conv = conv2d("0", c.dim, c.dim, self.kernel, (c.s.h, c.s.w), groups=c.dim)
        return Count.group("pos", [Count.group("proj", [conv])])

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        y = tape.conv2d(x.permute(0, 3, 1, 2), c.dim, self.kernel, padding=self.kernel // 2, groups=c.dim)
        return y.permute(0, 2, 3, 1)
