"""The feed-forward of PVT-v2: a depthwise conv on the patch grid between the MLP's two linears, which gives
the tokens positional information without a position table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, conv2d, linear
from archgen.feedforwards.depthwise import DepthwiseKernel
from archgen.memory import T, Tape
from archgen.norms import Act, Activated, act_field


class DwConvMlp(Activated, Op):
    """``fc1`` (dim -> hidden), optionally ReLU (PVT-v2-li), depthwise ``dwconv`` k x k on the grid, the
    activation, ``fc2`` (hidden -> dim) (timm ``MlpWithDepthwiseConv``). Reads the patch grid; prefix
    tokens, in a sequence block, pass it unchanged."""

    attr = "mlp"
    reads = "grid"
    args = ("dim", "hidden", "proj_drop")
    class_name = "DwConvMlp"
    label = "DwConv"
    size_free = True

    kind: Literal["dwconv_mlp"] = Field(
        description="MLP with a depthwise conv between its linears (timm PVT-v2 `mlp.fc1`, `mlp.dwconv`, `mlp.fc2`)."
    )
    kernel_size: DepthwiseKernel = 3
    relu: bool = Field(default=False, description="A ReLU before the depthwise conv (PVT-v2-li's `extra_relu`).")
    act: Act = act_field(what="Activation after the depthwise conv")

    def count(self, c: OpCtx) -> Count:
        n = c.s.patches
        return Count.group(
            "mlp",
            [
                linear("fc1", c.dim, c.hidden, n),
                conv2d("dwconv", c.hidden, c.hidden, self.kernel_size, (c.s.h, c.s.w), groups=c.hidden),
                linear("fc2", c.hidden, c.dim, n),
            ],
        )

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        k = self.kernel_size
        x = tape.linear(x, c.hidden).permute(0, 3, 1, 2)  # (B, hidden, H, W), a view
        x = tape.act(x, "relu") if self.relu else x
        x = tape.conv2d(x, c.hidden, k, 1, k // 2, groups=c.hidden).permute(0, 2, 3, 1)  # (B, H, W, hidden)
        return tape.linear(tape.act(x, self.act), c.dim)
