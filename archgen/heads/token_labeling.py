"""VOLO's token-labeling head: a classifier on the class token plus ``aux_head`` on every patch token."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.errors import KindError
from archgen.heads.head import Head
from archgen.memory import T, Tape
from archgen.norms import Norm


class TokenLabelingHead(Head):
    """logits = head(cls) + 0.5 * max over patch tokens of aux_head(token) (timm, train and eval)."""

    pool = "token"  # timm's default global_pool

    kind: Literal["token_labeling"] = Field(
        description="`head` on the class token + 0.5 x max over patch tokens of `aux_head` (VOLO's token labeling)."
    )

    def check(self, s: Tokens, m: Model) -> None:
        if s.groups[:1] != ("cls",) or not s.patches:
            raise KindError("kind", "a token-labeling head needs the class token first and patch tokens")

    def classifiers(self) -> tuple[str, ...]:
        return ("head", "aux_head")

    def tokens_per_classifier(self, s: Tokens) -> dict[str, int]:
        return {"head": 1, "aux_head": s.patches}

    def inputs(self, tape: Tape, x: T, s: Tokens, fc_norm: Norm | None) -> dict[str, T]:
        return {"head": x[:, 0], "aux_head": x[:, s.prefix :]}

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model, fc_norm: Norm | None = None) -> dict[str, T]:
        logits = super().memory(tape, x, s, m, fc_norm)
        tape.max(logits["aux_head"], dim=1)  # the largest patch-token prediction (or feature) of each class
        return logits

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on cls + 0.5 max aux")
