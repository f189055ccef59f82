"""Learned prefix tokens (class, distillation) concatenated in front of the patch tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, parameter
from archgen.kinds.base import Model, Step, Tokens

TokenName = Literal["cls", "dist"]


class PrefixTokens(Step):
    """Built by the compiler from the spec's ``prefix_tokens`` list; not written as a mapping."""

    slot = "tokens"
    template = "prefix_tokens.j2"

    kind: Literal["prefix_tokens"] = "prefix_tokens"
    tokens: tuple[TokenName, ...] = Field(description="Which tokens, in sequence order.")
    joined_by_stage: bool = Field(
        default=False, description="A later stage joins the tokens itself (CaiT class attention)."
    )

    def out(self, s: Tokens, m: Model) -> Tokens:
        return s if self.joined_by_stage else s.with_(prefix=s.prefix + len(self.tokens))

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("", [parameter(f"{t}_token", s.dim) for t in self.tokens])

    def no_weight_decay(self) -> tuple[str, ...]:
        return tuple(f"{t}_token" for t in self.tokens)
