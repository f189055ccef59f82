"""CeiT's encoder stage: pre-norm blocks with a LeFF feed-forward that also hand on their class tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from archgen.counting import Count, norm
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.drop_path import DropPath

if TYPE_CHECKING:  # the registry resolves these slot unions at import time
    AttentionSlot = Kind
    LeffSlot = Kind


@dataclass(frozen=True)
class LayerClassTokens(Tokens):
    """The token sequence, plus ``layers`` class tokens collected block by block.

    They live in the local list ``cls_tokens`` of ``forward_features``; the ``lca`` stage reads it.
    """

    layers: int = 0


class LeFFStage(Step):
    """``depth`` blocks ``x + attn(norm1(x))``, ``x + leff(norm2(x))``; the class token after each
    block is appended to a list for the LCA stage."""

    slot = "stage"
    template = "ceit.j2"

    kind: Literal["leff_blocks"] = Field(
        description="CeiT blocks (official `Block` with feedforward_type 'leff'), collecting class tokens."
    )
    key: StageKey
    depth: int = Field(ge=1, le=1000, description="Number of blocks (and of collected class tokens).")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="LeFF hidden width = int(dim * mlp_ratio).")
    attention: AttentionSlot = Field(description="Token-mixing attention of every block.")
    leff: LeffSlot = Field(description="Locally-enhanced feed-forward of every block.")

    def children(self) -> tuple[Kind, ...]:
        return (DropPath(), self.attention, self.leff)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq":
            raise KindError("kind", f"CeiT blocks need a token sequence, got a {s.layout}")
        if s.prefix != 1:
            raise KindError("kind", f"LeFF lets exactly one class token bypass it, not {s.prefix}")
        if s.h != s.w:
            raise KindError("kind", f"LeFF needs a square token grid, got {s.h}x{s.w}")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        return LayerClassTokens(s.dim, s.h, s.w, s.prefix, s.layout, layers=self.depth)

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        block = Count.group(
            "",
            [
                norm("norm2", s.dim, s.n * s.dim),
                norm("norm1", s.dim, s.n * s.dim),
                self.attention.count(s.dim, self.heads, s.n),
                self.leff.count(s.dim, self.hidden(s.dim), s.h * s.w),
            ],
        )
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"{self.attention.kind} + LeFF", str(self.depth), str(self.heads))

    def num_blocks(self) -> int:
        return self.depth
