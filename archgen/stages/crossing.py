"""Prefix tokens crossing a downsample: what every downsample step shares when the model says how its
class (and distillation) tokens reach the next, wider stage.

Prefix tokens have no place on the patch grid a downsample works on, so by default a downsample refuses
them (the compiler's turn of the sequence into a grid says so). A step with ``prefix: linear`` takes the
whole sequence instead: it splits the prefix tokens off, maps them to the new width with its own Linear
``fc`` (PiT's ``Pooling.fc``), downsamples the patch tokens and puts the two back together.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Step, Tokens
from archgen.counting import Count, linear
from archgen.errors import KindError
from archgen.memory import T, Tape

PREFIX_DOC = (
    "How prefix tokens cross this downsample: `linear` maps them to the new width with their own Linear `fc` "
    "(PiT); none: the step takes no prefix tokens."
)


class CrossesPrefix(Step):
    """A downsample of the patch grid (``dim`` wide after it) that prefix tokens may cross."""

    dim: int
    prefix: Literal["linear"] | None = Field(default=None, description=PREFIX_DOC)

    def needs(self, s: Tokens) -> str | None:
        return "seq" if self.prefix is not None else "grid"

    def check_prefix(self, s: Tokens) -> None:
        if self.prefix is not None and not s.prefix:
            raise KindError("prefix", "no prefix tokens reach this step: leave `prefix` out")

    def crossed(self, s: Tokens, h: int, w: int) -> Tokens:
        """The state after the step: the downsampled grid, as a grid or (prefix tokens crossing) a sequence."""
        self.check_prefix(s)
        if self.prefix is None:
            return Tokens(self.dim, h, w, "grid")
        return s.with_(dim=self.dim, h=h, w=w, layout="seq")

    def prefix_count(self, s: Tokens) -> list[Count]:
        return [linear("fc", s.dim, self.dim, s.prefix)] if self.prefix is not None else []

    def prefix_memory(self, tape: Tape, x: T, s: Tokens) -> tuple[T | None, T]:
        """Split a crossing sequence: the prefix tokens mapped by ``fc``, and the patch tokens as a
        (B, C, h, w) view (``x[:, p:].transpose(1, 2).unflatten(2, (h, w))``); without crossing, the grid
        (B, h, w, C) as a (B, C, h, w) view."""
        if self.prefix is None:
            return None, x.permute(0, 3, 1, 2)
        prefix = tape.linear(x[:, : s.prefix], self.dim)
        return prefix, x[:, s.prefix :].transpose(1, 2).unflatten(2, (s.h, s.w))

    def joined_memory(self, tape: Tape, prefix: T | None, x: T) -> T:
        """The downsampled (B, C, h, w) map back in the step's output layout, the mapped prefix tokens first."""
        if prefix is None:
            return x.permute(0, 2, 3, 1)
        return tape.cat([prefix, x.flatten(2).transpose(1, 2)], dim=1)
