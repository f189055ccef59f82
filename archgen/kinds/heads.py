"""Classifier heads read from the prefix tokens after the final norm."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, linear
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, Tokens


class Head(Kind):
    """Base of the ``head`` slot: the part after ``forward_features``."""

    slot = "head"

    def count(self, s: Tokens, m: Model) -> Count:
        raise NotImplementedError

    def row(self, s: Tokens, m: Model) -> Row:
        raise NotImplementedError

    def check(self, m: Model) -> None:
        """Raise ``KindError`` when the head needs tokens the spec does not have."""


class TokenHead(Head):
    """Linear classifier on the class token (ViT, DeiT)."""

    template = "token_head.j2"

    kind: Literal["token"] = Field(description="`head` = Linear(dim, num_classes) on the class token.")

    def check(self, m: Model) -> None:
        if m.prefix_tokens[:1] != ("cls",):
            raise KindError("kind", "a token head needs `prefix_tokens` to start with cls")

    def count(self, s: Tokens, m: Model) -> Count:
        return linear("head", s.dim, m.num_classes, 1) if m.num_classes else Count("head")

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on cls")


class DistilledHead(Head):
    """DeiT's two classifiers: ``head`` on the class token, ``head_dist`` on the distillation token."""

    template = "distilled_head.j2"

    kind: Literal["distilled"] = Field(
        description="Class and distillation heads; training returns both, eval their mean."
    )

    def check(self, m: Model) -> None:
        if m.prefix_tokens[:2] != ("cls", "dist"):
            raise KindError("kind", "a distilled head needs `prefix_tokens: [cls, dist]`")

    def count(self, s: Tokens, m: Model) -> Count:
        if not m.num_classes:
            return Count.group("", [Count("head"), Count("head_dist")])
        heads = [linear("head", s.dim, m.num_classes, 1), linear("head_dist", s.dim, m.num_classes, 1)]
        return Count.group("", heads)

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on cls + dist")
