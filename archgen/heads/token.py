"""Linear classifier on the class token (ViT, DeiT, CaiT, CeiT, DeepViT)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.errors import KindError
from archgen.heads.head import Head


class TokenHead(Head):
    """``head`` = Linear(dim, num_classes) on the first token, the class token."""

    pool = "token"  # timm's default global_pool

    kind: Literal["token"] = Field(description="`head` = Linear(dim, num_classes) on the class token.")

    def check(self, s: Tokens, m: Model) -> None:
        if s.groups[:1] != ("cls",):
            raise KindError("kind", "a token head needs the class token first in the sequence")

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on cls")
