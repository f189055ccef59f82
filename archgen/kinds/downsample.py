"""A strided conv between stages: token grid in, a smaller grid out, flattened to a sequence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, conv2d
from archgen.errors import KindError
from archgen.kinds.base import Model, Row, StageKey, Step, Tokens


class ConvDownsample(Step):
    """``<key>.proj`` = Conv2d(dim_in, dim, stride x stride, stride); the tokens continue as a sequence."""

    slot = "stage"
    template = "downsample.j2"

    kind: Literal["conv_downsample"] = Field(
        description="Patch-merging conv on a token grid (timm `volo` Downsample); outputs a token sequence."
    )
    key: StageKey
    dim: int = Field(ge=1, le=16384, description="Token width after the conv.")
    stride: int = Field(ge=1, le=16, description="Kernel side and stride.")

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "grid":
            raise KindError("kind", f"a conv downsample needs a token grid, got a {s.layout}")
        if s.h % self.stride or s.w % self.stride:
            raise KindError("stride", f"{self.stride} does not divide the {s.h}x{s.w} token grid")
        return Tokens(self.dim, s.h // self.stride, s.w // self.stride, 0, "seq")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        return Count.group(self.key, [conv2d("proj", s.dim, self.dim, self.stride, (o.h, o.w))])

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"conv {self.stride}x{self.stride}/{self.stride}")
