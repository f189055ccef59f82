"""DeepViT's convolutional patch stem: two conv + BN + ReLU layers, then a patch conv."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.counting import Count, conv2d, norm
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.stems.stem import Grid, Stem


def _half(s: Tokens) -> tuple[int, int]:
    """The (h, w) of the stride-2 conv's map (rounding up)."""
    return (s.h - 1) // 2 + 1, (s.w - 1) // 2 + 1


class ConvPatchEmbed(Stem):
    """``patch_embed.conv1`` 7x7/2 + ``bn1`` + ReLU, ``conv2`` 3x3 + ``bn2`` + ReLU (convs without bias),
    then ``proj``: a ``patch_size`` x ``patch_size`` conv with stride ``patch_size`` and a bias."""

    first_conv: ClassVar[str] = "patch_embed.conv1"

    kind: Literal["conv_patch_embed"] = Field(
        description="DeepViT's CNN patch embedding (official `PatchEmbed_CNN`, stored as `patch_embed`)."
    )
    channels: int = Field(default=64, ge=1, le=4096, description="Channels of the two stem convs.")
    patch_size: int = Field(ge=1, le=64, description="Patch side on the stride-2 feature map.")
    dim: int = Field(ge=1, le=16384, description="Token width after the patch conv.")

    def grid(self) -> Grid:
        return Grid(1, 2 * self.patch_size)  # conv /2 (rounding up), then the patches

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "image":
            raise KindError("kind", "the conv patch stem takes the image")
        h, w = _half(s)
        if h % self.patch_size or w % self.patch_size:
            raise KindError("patch_size", f"{self.patch_size} does not divide the {h}x{w} feature map")
        return Tokens(self.dim, h // self.patch_size, w // self.patch_size, "seq")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        at = _half(s)
        c = self.channels
        return Count.group(
            "patch_embed",
            [
                conv2d("conv1", s.dim, c, 7, at, bias=False),
                norm("bn1", c, c * at[0] * at[1], per_element=2),
                conv2d("conv2", c, c, 3, at, bias=False),
                norm("bn2", c, c * at[0] * at[1], per_element=2),
                conv2d("proj", c, self.dim, self.patch_size, (o.h, o.w)),
            ],
        )

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        x = tape.relu_(tape.batch_norm(tape.conv2d(x, self.channels, 7, 2, 3)))  # (B, channels, H/2, W/2)
        x = tape.relu_(tape.batch_norm(tape.conv2d(x, self.channels, 3, 1, 1)))
        return tape.conv2d(x, self.dim, self.patch_size, self.patch_size).flatten(2).transpose(1, 2)  # (B, N, C)

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"conv 7/2, 3x3 + {self.patch_size}x{self.patch_size} patch")
