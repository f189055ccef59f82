"""Patch merging between stages (Swin): each 2x2 cell of the token grid concatenated into one token of 4C,
normed, and mapped to the next stage's width by a linear without bias."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, StageKey, Step, Tokens
from archgen.counting import Count, linear
from archgen.memory import T, Tape
from archgen.norms import LAYERNORM, NormValue


class PatchMerging(Step):
    """``<key>.norm`` = norm(4C) and ``<key>.reduction`` = Linear(4C, dim, bias=False) on the 2x2 cells of the
    grid. A grid with an odd side is padded with a zero row or column first (timm's rule), so the output grid
    is (ceil(h / 2), ceil(w / 2))."""

    slot = "stage"

    kind: Literal["patch_merging"] = Field(
        description="Concatenate each 2x2 cell of the grid, norm, and project (timm Swin `PatchMerging`)."
    )
    key: StageKey
    dim: int | None = Field(default=None, ge=1, le=16384, description="Token width after it (default: twice).")
    norm: NormValue = Field(default=LAYERNORM, description="Norm of the concatenated 4C-wide tokens (`norm`).")

    def needs(self, s: Tokens) -> str | None:
        return "grid"

    def grid_stride(self) -> int:
        return 2

    def grid_ceil(self) -> bool:
        return True

    def width(self, s: Tokens) -> int:
        return self.dim if self.dim is not None else 2 * s.dim

    def out(self, s: Tokens, m: Model) -> Tokens:
        return Tokens(self.width(s), -(-s.h // 2), -(-s.w // 2), "grid")

    def count(self, s: Tokens, m: Model) -> Count:
        o = self.out(s, m)
        norm = [self.norm.count("norm", 4 * s.dim, o.patches * 4 * s.dim)] if self.norm is not None else []
        return Count.group(self.key, [*norm, linear("reduction", 4 * s.dim, o.dim, o.patches, bias=False)])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = tape.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        h, w = -(-H // 2), -(-W // 2)
        x = x.reshape(B, h, 2, w, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)  # a copy: (B, h, w, 4C)
        x = self.norm.memory(tape, x) if self.norm is not None else x
        return tape.linear(x, self.width(s), bias=False)

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("patch merging 2x2")
