"""A norm of every token as a stage step with its own key: a pyramid's norm at the end of each stage (timm
PVT-v2's and Twins' `stages.i.norm`), before the next stage's downsample and before a feature tap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from archgen.base import Model, StageKey, Step, Tokens
from archgen.counting import Count
from archgen.memory import T, Tape
from archgen.norms import Norm, NormValue


class StageNorm(Step):
    """``<key>`` = the norm, over the channels of every token, in whatever layout the tokens have."""

    slot = "stage"

    kind: Literal["norm"] = Field(description="A norm of every token as a stage step (timm PVT-v2 `stages.i.norm`).")
    key: StageKey
    norm: NormValue = Field(description="The norm: `layernorm`, `rmsnorm` or a mapping with its options.")

    @field_validator("norm")
    @classmethod
    def _some(cls, value: Norm | None) -> Norm:
        if value is None:
            raise ValueError("a norm step needs a norm (`layernorm` or `rmsnorm`)")
        return value

    @property
    def the_norm(self) -> Norm:
        assert self.norm is not None
        return self.norm

    @property
    def size_free(self) -> bool:
        return True

    def out(self, s: Tokens, m: Model) -> Tokens:
        return s

    def count(self, s: Tokens, m: Model) -> Count:
        return self.the_norm.count(self.key, s.dim, s.n * s.dim)

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        return self.the_norm.memory(tape, x)
