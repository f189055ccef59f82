"""Final LayerNorm over every token (timm `norm`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Step, Tokens
from archgen.counting import Count, norm
from archgen.memory import T, Tape


class FinalLayerNorm(Step):
    """Normalises every token after the last stage. With an average-pooling head and ``fc_norm`` it moves
    after the pooling instead (timm's rule), and is stored as ``fc_norm``."""

    slot = "norm"

    kind: Literal["layernorm"] = Field(description="LayerNorm with the spec's `norm_eps`, stored as `norm`.")

    def out(self, s: Tokens, m: Model) -> Tokens:
        return s

    def count(self, s: Tokens, m: Model) -> Count:
        return norm("norm", s.dim, s.n * s.dim)

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        return tape.layer_norm(x)
