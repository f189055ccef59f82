"""Fixed 2-D sinusoidal position table: one sin-cos encoding per grid axis (MAE, big_vision)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Tokens
from archgen.counting import Count, parameter
from archgen.errors import KindError
from archgen.tokens.table import SequenceTable


class SinCos2dPosEmbed(SequenceTable):
    """For the patch in column x and row y: [sin(x w_i), cos(x w_i), sin(y w_i), cos(y w_i)], i < dim / 4,
    patches row by row; covered prefix tokens get zero rows.

    ``convention: mae``: w_i = 10000^(-i / (dim / 4)) (MAE's ``get_2d_sincos_pos_embed``), stored as a frozen
    parameter ``pos_embed`` so MAE checkpoints load. ``big_vision``: w_i = 10000^(-i / (dim / 4 - 1))
    (``posemb_sincos_2d``), computed at construction as a buffer that is not saved.
    """

    kind: Literal["sincos_2d"] = Field(description="Fixed 2-D sin-cos table over the patch grid.")
    convention: Literal["mae", "big_vision"] = Field(
        description="`mae` (frozen parameter, MAE's frequencies) or `big_vision` (computed buffer, no state)."
    )

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.dim % 4 or (self.convention == "big_vision" and s.dim < 8):
            raise KindError("kind", f"a 2-D sin-cos table needs a width divisible by 4 (at least 8), not {s.dim}")
        return super().out(s, m)

    def count(self, s: Tokens, m: Model) -> Count:
        if self.convention == "mae":
            return parameter("pos_embed", s.n * s.dim, frozen=True)  # frozen, but a parameter: sum(numel) counts it
        return Count.group("", [])  # a buffer: no parameters, no MACs
