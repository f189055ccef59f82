"""Learned 1-D position table added to the token sequence (ViT, DeiT, CaiT, CeiT, DeepViT)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Tokens
from archgen.counting import Count, parameter
from archgen.tokens.table import SequenceTable


class LearnedPosEmbed(SequenceTable):
    """One learned vector per token position, stored as ``pos_embed`` (1, N, dim). A checkpoint trained
    at another resolution loads: its patch rows are resampled bicubically, as timm does."""

    kind: Literal["learned"] = Field(description="Learned 1-D table `pos_embed` of shape (1, N, dim).")

    def count(self, s: Tokens, m: Model) -> Count:
        return parameter("pos_embed", s.n * s.dim)

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("pos_embed",)
