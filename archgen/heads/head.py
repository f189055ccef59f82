"""What every classifier head shares. Not a part itself: the heads in this folder subclass it."""

from __future__ import annotations

from typing import ClassVar

from archgen.base import Model, Part, Row, Tokens
from archgen.counting import Count, linear
from archgen.memory import T, Tape
from archgen.norms import Norm


class Head(Part):
    """The part after ``forward_features``: pooling or token selection, then the classifier(s).

    ``fc_norm`` is the spec's final norm where it moved into the head (timm's ``fc_norm``); only heads whose
    ``takes_norm`` is true ever get it.
    """

    slot = "head"
    pool: ClassVar[str]  # the model's default global_pool: how forward_head reads the tokens

    def takes_norm(self) -> bool:
        """Whether the final norm runs after pooling, as ``fc_norm``, instead of on every token."""
        return False

    def needs(self, s: Tokens) -> str:
        """The token layout ``forward_head`` reads (the compiler converts the last step's output to it)."""
        return "seq"

    def check(self, s: Tokens, m: Model) -> None:
        """Raise ``KindError`` when the head needs tokens the sequence does not have."""

    def classifiers(self) -> tuple[str, ...]:
        return ("head",)

    def count(self, s: Tokens, m: Model, fc_norm: Norm | None = None) -> Count:
        parts = [fc_norm.count("fc_norm", s.dim, s.dim)] if fc_norm else []
        for name in self.classifiers():
            tokens = self.tokens_per_classifier(s)[name]
            parts.append(linear(name, s.dim, m.num_classes, tokens) if m.num_classes else Count(name))
        return Count.group("", parts)

    def inputs(self, tape: Tape, x: T, s: Tokens, fc_norm: Norm | None) -> dict[str, T]:
        """What each classifier reads in ``forward_head`` with the default ``global_pool``."""
        return {name: x[:, i] for i, name in enumerate(self.classifiers())}  # class (and distillation) token

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model, fc_norm: Norm | None = None) -> dict[str, T]:
        """Trace ``forward_head``; returns each classifier's logits."""
        return {
            name: tape.linear(inp, m.num_classes) if m.num_classes else inp
            for name, inp in self.inputs(tape, x, s, fc_norm).items()
        }

    def tokens_per_classifier(self, s: Tokens) -> dict[str, int]:
        return {name: 1 for name in self.classifiers()}

    def row(self, s: Tokens, m: Model) -> Row:
        raise NotImplementedError
