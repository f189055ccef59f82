"""Learned 2-D position table over the patch grid: ``(1, H, W, C)`` (VOLO) or ``(1, C, H, W)`` (PiT)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Tokens
from archgen.counting import Count, parameter
from archgen.errors import KindError
from archgen.tokens.table import PositionTable


class LearnedPosEmbed2d(PositionTable):
    """One learned vector per grid cell (no prefix-token rows), stored as ``pos_embed`` (1, H, W, C):
    added to a token grid as it is, to a sequence flattened. VOLO adds it after its downsample
    (``before: network.2``). PiT stores it channels first, ``(1, C, H, W)``, and adds it right after the stem."""

    kind: Literal["learned_2d"] = Field(description="Learned 2-D table `pos_embed` of shape (1, H, W, dim).")
    channels_first: bool = Field(
        default=False, description="Store the table as (1, dim, H, W), PiT's layout, instead of (1, H, W, dim)."
    )

    def needs(self, s: Tokens) -> str | None:
        return None

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.prefix:
            raise KindError("kind", "a 2-D table covers the patch grid; add it before any prefix token joins")
        return s

    def count(self, s: Tokens, m: Model) -> Count:
        return parameter("pos_embed", s.patches * s.dim)

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("pos_embed",)
