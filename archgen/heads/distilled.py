"""DeiT's two classifiers: ``head`` on the class token, ``head_dist`` on the distillation token."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.errors import KindError
from archgen.heads.head import Head


class DistilledHead(Head):
    """Training returns both logits (one loss each, hard distillation); inference their mean."""

    pool = "token"  # timm's default global_pool

    kind: Literal["distilled"] = Field(
        description="Class and distillation heads; training returns both, eval their mean."
    )

    def check(self, s: Tokens, m: Model) -> None:
        if s.groups[:2] != ("cls", "dist"):
            raise KindError("kind", "a distilled head needs the class and distillation tokens first")

    def classifiers(self) -> tuple[str, ...]:
        return ("head", "head_dist")

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on cls + dist")
