"""Final LayerNorm over every token (timm `norm`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, norm
from archgen.kinds.base import Model, Step, Tokens


class FinalLayerNorm(Step):
    slot = "norm"
    template = "layernorm.j2"

    kind: Literal["layernorm"] = Field(description="LayerNorm with the spec's `norm_eps`, stored as `norm`.")

    def out(self, s: Tokens, m: Model) -> Tokens:
        return s

    def count(self, s: Tokens, m: Model) -> Count:
        return norm("norm", s.dim, s.n * s.dim)
