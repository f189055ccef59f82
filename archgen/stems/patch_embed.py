"""Linear patch embedding: non-overlapping P x P patches projected to ``dim`` (a strided conv)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.counting import Count, conv2d
from archgen.errors import KindError
from archgen.geometry import size_text
from archgen.memory import T, Tape
from archgen.norms import NormValue
from archgen.stems.stem import Grid, Stem


class PatchEmbed(Stem):
    """Split the image into ``patch_size`` x ``patch_size`` patches, each linearly projected to ``dim``."""

    first_conv: ClassVar[str] = "patch_embed.proj"

    kind: Literal["patch_embed"] = Field(description="Linear patch embedding (timm `patch_embed.proj`).")
    patch_size: int = Field(ge=1, le=64, description="Patch side in pixels; also the conv stride.")
    dim: int = Field(ge=1, le=16384, description="Token width after the projection.")
    bias: bool = Field(default=True, description="The projection's bias (CLIP and AIMv2 have none).")
    norm: NormValue = Field(
        default=None, description="Norm of the tokens inside the stem (timm `patch_embed.norm`: AIMv2, Swin)."
    )
    remainder: Literal["refuse", "drop"] = Field(
        default="refuse",
        description="Where `patch_size` does not divide the image: `refuse` the size, or `drop` the pixels past the "
        "last whole patch at the bottom and right, as the strided conv does in timm (SO400M/14 at 384: 27x27 "
        "patches, 6 px left out of each side's 384).",
    )

    def grid(self) -> Grid:
        return Grid(0, self.patch_size)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if (s.h % self.patch_size or s.w % self.patch_size) and self.remainder == "refuse":
            raise KindError("patch_size", f"{self.patch_size} does not divide the image size {size_text((s.h, s.w))}")
        return Tokens(self.dim, s.h // self.patch_size, s.w // self.patch_size, "seq")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        proj = conv2d("proj", s.dim, self.dim, self.patch_size, (o.h, o.w), bias=self.bias)
        norm = [self.norm.count("norm", self.dim, o.n * self.dim)] if self.norm is not None else []
        return Count.group("patch_embed", [proj, *norm])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        x = tape.conv2d(x, self.dim, self.patch_size, self.patch_size)  # (B, C, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.norm.memory(tape, x) if self.norm is not None else x

    def row(self, s: Tokens, m: Model) -> Row:
        left = (s.h % self.patch_size, s.w % self.patch_size)
        dropped = f" ({size_text(left)} px past the last patch left out)" if any(left) else ""
        return Row(f"patch {self.patch_size}x{self.patch_size}{dropped}")
