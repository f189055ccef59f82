"""A general convolutional embedding: one conv (any kernel, stride, padding), then optionally a norm of every
token. As the stem it reads the image (PVT-v2's overlapping 7x7/4 patch embedding, PiT's 16/8 conv); as a stage
step with a key it reads the token grid (PVT-v2's `stages.i.downsample`, Twins' `patch_embeds.i`). Either way
it writes the token grid (B, H, W, C)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, StageKey, Tokens
from archgen.counting import Count, conv2d
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.norms import NormValue
from archgen.stems.stem import Grid, Stem


class ConvEmbed(Stem):
    """``<key>.<conv>`` = Conv2d(c_in, dim, kernel, stride, padding), then ``<key>.norm`` over the channels of
    every token of the resulting grid."""

    also = ("stage",)  # a stage step too: a pyramid's downsample between stages

    kind: Literal["conv_embed"] = Field(
        description="Conv embedding of the image (as the stem) or of the token grid (as a stage step): timm "
        "PVT-v2 `OverlapPatchEmbed`, PiT `ConvEmbedding`, Twins `PatchEmbed`."
    )
    key: StageKey = Field(
        default="patch_embed", description="Attribute path: `patch_embed` as the stem, `stages.1.downsample` later."
    )
    dim: int = Field(ge=1, le=16384, description="Token width after the conv.")
    kernel: int = Field(ge=1, le=64, description="Kernel side.")
    stride: int = Field(ge=1, le=64, description="Stride (the grid shrinks by it).")
    padding: int | None = Field(default=None, ge=0, le=32, description="Zero padding per side (default kernel // 2).")
    bias: bool = Field(default=True, description="The conv's bias.")
    norm: NormValue = Field(default=None, description="Norm of every token after the conv (`<key>.norm`).")
    conv: Literal["proj", "conv"] = Field(
        default="proj", description="Attribute name of the conv: `proj` (PVT-v2, Twins) or `conv` (PiT)."
    )

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding

    @property
    def first_conv(self) -> str:  # type: ignore[override]
        return f"{self.key}.{self.conv}"

    @property
    def class_name(self) -> str:
        """One class per variant in a file: with and without the norm (PiT's stem has none)."""
        return "ConvEmbed" if self.norm is not None else "PlainConvEmbed"

    @property
    def offset(self) -> int:
        """Output side = (side + offset) // stride, with offset = 2 * padding - kernel + stride."""
        return 2 * self.pad - self.kernel + self.stride

    def needs(self, s: Tokens) -> str | None:
        return None if s.layout == "image" else "grid"

    def grid(self) -> Grid:
        return Grid(self.offset, self.stride)

    def grid_stride(self) -> int:
        return self.stride

    def grid_offset(self) -> int:
        return self.offset

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.prefix:
            raise KindError("kind", f"prefix tokens ({', '.join(s.groups)}) cannot pass a conv embedding")
        h, w = (s.h + self.offset) // self.stride, (s.w + self.offset) // self.stride
        if min(s.h, s.w) + 2 * self.pad < self.kernel:
            what = "image" if s.layout == "image" else "token grid"
            raise KindError("kernel", f"{self.kernel} is larger than the padded {s.h}x{s.w} {what}")
        return Tokens(self.dim, h, w, "grid")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        parts = [conv2d(self.conv, s.dim, self.dim, self.kernel, (o.h, o.w), bias=self.bias)]
        if self.norm is not None:
            parts.append(self.norm.count("norm", self.dim, o.patches * self.dim))
        return Count.group(self.key, parts)

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        x = x if s.layout == "image" else x.permute(0, 3, 1, 2)  # the grid's channels first, a view
        x = tape.conv2d(x, self.dim, self.kernel, self.stride, self.pad).permute(0, 2, 3, 1)  # (B, H', W', C)
        return self.norm.memory(tape, x) if self.norm is not None else x

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"conv {self.kernel}x{self.kernel}/{self.stride}" + (f" + {self.norm.kind}" if self.norm else ""))
