"""CeiT's locally-enhanced feed-forward: the MLP as 1x1 convs around a depthwise conv on the patch grid."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, conv2d, norm
from archgen.feedforwards.depthwise import DepthwiseKernel
from archgen.memory import T, Tape
from archgen.norms import Act, Activated, act_field


class LeFF(Activated, Op):
    """1x1 expand + BN + act, depthwise k x k + BN + act, 1x1 reduce + BN (no activation after it); the
    activation is GELU in CeiT.

    Works on the patch tokens as a grid; in a block whose tokens are a sequence the prefix tokens pass
    it unchanged ("the class token conducts an identical mapping", CeiT Sec. 3.2), so the residual adds a
    class token's own normalised value.
    """

    attr = "leff"
    reads = "grid"
    args = ("dim", "hidden")
    class_name = "LeFF"
    label = "LeFF"

    kind: Literal["leff"] = Field(description="Locally-enhanced feed-forward (official CeiT `leff`).")
    kernel_size: DepthwiseKernel = 3
    act: Act = act_field(what="Activation after the first two convs")

    def count(self, c: OpCtx) -> Count:
        at = (c.s.h, c.s.w)
        pixels = c.s.patches
        return Count.group(
            "leff",
            [
                conv2d("conv1", c.dim, c.hidden, 1, at),
                conv2d("conv2", c.hidden, c.hidden, self.kernel_size, at, groups=c.hidden),
                conv2d("conv3", c.hidden, c.dim, 1, at),
                norm("bn1", c.hidden, pixels * c.hidden, per_element=2),
                norm("bn2", c.hidden, pixels * c.hidden, per_element=2),
                norm("bn3", c.dim, pixels * c.dim, per_element=2),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        k = self.kernel_size
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        x = tape.act(tape.batch_norm(tape.conv2d(x, c.hidden, 1)), self.act)
        x = tape.act(tape.batch_norm(tape.conv2d(x, c.hidden, k, 1, k // 2, groups=c.hidden)), self.act)  # depthwise
        return tape.batch_norm(tape.conv2d(x, c.dim, 1)).permute(0, 2, 3, 1)  # (B, H, W, C)
