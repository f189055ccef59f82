"""VOLO's convolutional stem: three convs with BatchNorm and ReLU, then a strided patch conv."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.counting import Count, conv2d, norm
from archgen.errors import KindError
from archgen.geometry import size_text
from archgen.memory import T, Tape
from archgen.stems.stem import Grid, Stem


class ConvStem(Stem):
    """conv 7x7/2 + BN + ReLU, 2 x (conv 3x3 + BN + ReLU), then a (P/2) x (P/2) patch conv.

    Stored as ``patch_embed.conv.{0..8}`` (convs at 0, 3, 6, BatchNorms at 1, 4, 7) and
    ``patch_embed.proj``; the output is a channels-last token grid (B, H/P, W/P, dim).
    """

    first_conv: ClassVar[str] = "patch_embed.conv.0"

    kind: Literal["volo_conv_stem"] = Field(
        description="VOLO conv stem (timm `volo` PatchEmbed with stem_conv=True, stem_stride=2)."
    )
    hidden: int = Field(ge=1, le=4096, description="Channels of the three stem convs (64; 128 for D5).")
    patch_size: int = Field(ge=2, le=64, description="Total stride: 2 (first conv) x patch conv stride.")
    dim: int = Field(ge=1, le=16384, description="Token width after the patch conv.")

    def grid(self) -> Grid:
        return Grid(0, self.patch_size)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if self.patch_size % 2:
            raise KindError("patch_size", f"{self.patch_size} is odd; the first conv already strides by 2")
        if s.h % self.patch_size or s.w % self.patch_size:
            raise KindError("patch_size", f"{self.patch_size} does not divide the image size {size_text((s.h, s.w))}")
        return Tokens(self.dim, s.h // self.patch_size, s.w // self.patch_size, "grid")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        half = (s.h // 2, s.w // 2)
        pixels = half[0] * half[1] * self.hidden
        hd = self.hidden
        parts = [
            conv2d("0", s.dim, hd, 7, half, bias=False),
            norm("1", hd, pixels, per_element=2),
            conv2d("3", hd, hd, 3, half, bias=False),
            norm("4", hd, pixels, per_element=2),
            conv2d("6", hd, hd, 3, half, bias=False),
            norm("7", hd, pixels, per_element=2),
        ]
        proj = conv2d("proj", hd, self.dim, self.patch_size // 2, (o.h, o.w))
        return Count.group("patch_embed", [Count.group("conv", parts), proj])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        x = x.to_channels_last()  # the template's channels-last copy of the image
        x = tape.relu_(tape.batch_norm(tape.conv2d(x, self.hidden, 7, 2, 3)))
        x = tape.relu_(tape.batch_norm(tape.conv2d(x, self.hidden, 3, 1, 1)))
        x = tape.relu_(tape.batch_norm(tape.conv2d(x, self.hidden, 3, 1, 1)))
        p = self.patch_size // 2
        return tape.conv2d(x, self.dim, p, p).permute(0, 2, 3, 1)  # (B, H, W, C)

    def row(self, s: Tokens, m: Model) -> Row:
        p = self.patch_size // 2
        return Row(f"conv 7/2, 3, 3 ({self.hidden}) + {p}x{p}/{p}")
