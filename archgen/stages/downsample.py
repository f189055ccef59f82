"""A strided conv between stages: a token grid in, a smaller (and usually wider) grid out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, StageKey, Tokens
from archgen.counting import Count, conv2d
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.stages.crossing import CrossesPrefix


class ConvDownsample(CrossesPrefix):
    """``<key>.proj`` = Conv2d(dim_in, dim, stride x stride, stride) on the patch grid. After a stage whose
    tokens are a sequence, the compiler turns them back into their grid first; with ``prefix: linear`` the
    step takes the sequence itself and its prefix tokens cross through ``<key>.fc``."""

    slot = "stage"

    kind: Literal["conv_downsample"] = Field(
        description="Patch-merging conv on the token grid (timm `volo` Downsample); a pyramid's stage boundary."
    )
    key: StageKey
    dim: int = Field(ge=1, le=16384, description="Token width after the conv.")
    stride: int = Field(ge=1, le=16, description="Kernel side and stride.")

    def grid_stride(self) -> int:
        return self.stride

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.h % self.stride or s.w % self.stride:
            raise KindError("stride", f"{self.stride} does not divide the {s.h}x{s.w} token grid")
        return self.crossed(s, s.h // self.stride, s.w // self.stride)

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        conv = conv2d("proj", s.dim, self.dim, self.stride, (o.h, o.w))
        return Count.group(self.key, [conv, *self.prefix_count(s)])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        prefix, x = self.prefix_memory(tape, x, s)
        return self.joined_memory(tape, prefix, tape.conv2d(x, self.dim, self.stride, self.stride))

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"conv {self.stride}x{self.stride}/{self.stride}" + (" + fc" if self.prefix else ""))
