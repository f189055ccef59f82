"""Fixed 1-D sinusoidal position table of the original Transformer (Vaswani et al., 2017)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Tokens
from archgen.counting import Count
from archgen.tokens.table import SequenceTable


class SinCosPosEmbed(SequenceTable):
    """Position p, channel 2i: sin(p / 10000^(2i / dim)); channel 2i + 1: the cosine. Positions count the
    covered tokens in sequence order from 0. Computed at construction as a buffer that is not saved, so
    it has no parameters and no state_dict entry."""

    kind: Literal["sincos"] = Field(description="Fixed 1-D sin-cos table (Vaswani et al.), computed, no state.")

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("", [])  # a buffer: no parameters, no MACs
