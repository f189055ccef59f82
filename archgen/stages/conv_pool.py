"""PiT's pooling layer: a depthwise strided conv on the patch grid that also widens the tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, StageKey, Tokens
from archgen.counting import Count, conv2d
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.stages.crossing import CrossesPrefix


class ConvPool(CrossesPrefix):
    """``<key>.conv`` = Conv2d(dim_in, dim, kernel stride + 1, stride, padding stride // 2, groups dim_in):
    each input channel feeds dim / dim_in output channels (timm `pit` Pooling)."""

    slot = "stage"

    kind: Literal["conv_pool"] = Field(
        description="Depthwise strided conv on the token grid (timm `pit` Pooling `conv`); with `prefix: linear` "
        "the class tokens cross through `fc`."
    )
    key: StageKey
    dim: int = Field(ge=1, le=16384, description="Token width after the conv: a multiple of the width before.")
    stride: int = Field(default=2, ge=1, le=16, description="Stride; the kernel side is stride + 1.")

    @property
    def kernel(self) -> int:
        return self.stride + 1

    @property
    def padding(self) -> int:
        return self.stride // 2

    def grid_stride(self) -> int:
        return self.stride

    def side(self, n: int) -> int:
        return (n + 2 * self.padding - self.kernel) // self.stride + 1

    def out(self, s: Tokens, m: Model) -> Tokens:
        if self.dim % s.dim:
            raise KindError("dim", f"{self.dim} is not a multiple of the width before, {s.dim} (a depthwise conv)")
        h, w = self.side(s.h), self.side(s.w)
        if h < 1 or w < 1:
            raise KindError("stride", f"{self.stride} leaves no token of the {s.h}x{s.w} grid")
        return self.crossed(s, h, w)

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        conv = conv2d("conv", s.dim, self.dim, self.kernel, (o.h, o.w), groups=s.dim)
        return Count.group(self.key, [conv, *self.prefix_count(s)])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        prefix, x = self.prefix_memory(tape, x, s)
        x = tape.conv2d(x, self.dim, self.kernel, self.stride, self.padding, groups=s.dim)
        return self.joined_memory(tape, prefix, x)

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"dw conv {self.kernel}x{self.kernel}/{self.stride}" + (" + fc" if self.prefix else ""))
