"""CeiT's Image-to-Tokens stem: a small conv + BN + max-pool backbone, then a patch conv on its map."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.counting import Count, conv2d, norm
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.stems.stem import Grid, Stem


def _down(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class ImageToTokens(Stem):
    """``i2t.backbone`` (conv 7x7/2 without bias, BatchNorm, max-pool 3x3/2; no activation), then
    ``i2t.proj``, a ``patch_size`` x ``patch_size`` conv with stride ``patch_size`` and a bias."""

    first_conv: ClassVar[str] = "i2t.backbone.conv"

    kind: Literal["i2t"] = Field(description="CeiT Image-to-Tokens stem (official `i2t`).")
    channels: int = Field(default=64, ge=1, le=4096, description="Channels of the conv + BN + pool backbone.")
    patch_size: int = Field(ge=1, le=64, description="Patch side on the backbone's stride-4 map.")
    dim: int = Field(ge=1, le=16384, description="Token width after the patch conv.")

    def _maps(self, s: Tokens) -> tuple[tuple[int, int], tuple[int, int]]:
        """The (h, w) of the conv's map and of the pooled one."""
        conv = (_down(s.h, 7, 2, 3), _down(s.w, 7, 2, 3))
        return conv, (_down(conv[0], 3, 2, 1), _down(conv[1], 3, 2, 1))

    def grid(self) -> Grid:
        return Grid(3, 4 * self.patch_size)  # conv /2 and pool /2 (each rounding up), then the patches

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "image":
            raise KindError("kind", "the Image-to-Tokens stem takes the image")
        _, (h, w) = self._maps(s)
        if h % self.patch_size or w % self.patch_size:
            raise KindError("patch_size", f"{self.patch_size} does not divide the {h}x{w} map")
        return Tokens(self.dim, h // self.patch_size, w // self.patch_size, "seq")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        conv, _ = self._maps(s)
        backbone = Count.group(
            "backbone",
            [
                conv2d("conv", s.dim, self.channels, 7, conv, bias=False),
                norm("bn", self.channels, self.channels * conv[0] * conv[1], per_element=2),
            ],
        )
        proj = conv2d("proj", self.channels, self.dim, self.patch_size, (o.h, o.w))
        return Count.group("i2t", [backbone, proj])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        x = tape.max_pool2d(tape.batch_norm(tape.conv2d(x, self.channels, 7, 2, 3)), 3, 2, 1)  # (B, ch, H/4, W/4)
        return tape.conv2d(x, self.dim, self.patch_size, self.patch_size).flatten(2).transpose(1, 2)  # (B, N, C)

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"conv 7/2 + BN + pool 3/2, {self.patch_size}x{self.patch_size} patch")
