"""VOLO's token-labeling head: a classifier on the class token plus ``aux_head`` on every patch token."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, linear
from archgen.errors import KindError
from archgen.kinds.base import Model, Row, Tokens
from archgen.kinds.heads import Head


class TokenLabelingHead(Head):
    """logits = head(cls) + 0.5 * max over patch tokens of aux_head(token) (timm, train and eval)."""

    template = "volo_head.j2"

    kind: Literal["volo"] = Field(
        description="`head` on the class token + 0.5 x max over patch tokens of `aux_head` (token labeling)."
    )

    def check(self, m: Model) -> None:
        if m.prefix_tokens != ("cls",):
            raise KindError("kind", "the VOLO head needs `prefix_tokens: [cls]`")

    def count(self, s: Tokens, m: Model) -> Count:
        if not m.num_classes:
            return Count.group("", [Count("head"), Count("aux_head")])
        patches = s.h * s.w
        return Count.group(
            "", [linear("head", s.dim, m.num_classes, 1), linear("aux_head", s.dim, m.num_classes, patches)]
        )

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on cls + 0.5 max aux")
