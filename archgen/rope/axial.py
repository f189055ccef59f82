"""Axial 2-D rotary position embedding (EVA-02, timm's RoPE-ViT ``rope_224``; Heo et al. 2024's RoPE-Axial)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Tokens
from archgen.counting import Count
from archgen.memory import T, Tape
from archgen.rope.table import RotaryTable


class AxialRope(RotaryTable):
    """Fixed frequencies f_i = 1 / temperature^(i / (head_dim / 4)), i < head_dim / 4: channel pair i of every
    head turns by one grid coordinate times f_i, pair head_dim / 4 + i by the other's (timm's
    RotaryEmbeddingCat with ``in_pixels=False``). A buffer computed at construction for the default grid and
    recomputed for another one (dynamic_img_size): no parameters, no state_dict entry."""

    kind: Literal["axial"] = Field(description="Axial 2-D rotary table of fixed frequencies (EVA-02, RoPE-Axial).")
    temperature: float = Field(
        default=10000.0, gt=1, le=1e9, description="Base of the frequencies (EVA-02: 10000, RoPE-ViT: 100)."
    )
    ref_grid: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Coordinates scaled so that any grid spans this many patches per side (EVA's `ref_feat_shape`, "
        "the pretraining grid); none: patch indices.",
    )

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("", [])  # a buffer: no parameters; elementwise, so no MACs

    def table(self, tape: Tape, s: Tokens) -> T:
        return tape.buffer((s.patches, 2 * self.head_dim))  # one table for every block and head
