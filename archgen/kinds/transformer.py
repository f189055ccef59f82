"""A stage of pre-norm transformer blocks: x + attn(norm1(x)), then x + mlp(norm2(x))."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, norm
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.drop_path import DropPath

if TYPE_CHECKING:  # the registry resolves these slot unions at import time
    AttentionSlot = Kind
    MlpSlot = Kind


class Transformer(Step):
    """``depth`` identical pre-norm blocks stored as ``<key>.0`` … ``<key>.<depth-1>``."""

    slot = "stage"
    template = "transformer.j2"

    kind: Literal["transformer"] = Field(description="Pre-norm transformer blocks (timm `Block`).")
    key: StageKey
    depth: int = Field(ge=1, le=1000, description="Number of blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")
    attention: AttentionSlot = Field(description="Token-mixing attention of every block.")
    mlp: MlpSlot = Field(description="Feed-forward layer of every block.")

    def children(self) -> tuple[Kind, ...]:
        return (DropPath(), self.attention, self.mlp)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq":
            raise KindError("kind", f"{self.label} blocks need a token sequence, got a {s.layout}")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        return s

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def block_parts(self, s: Tokens) -> list[Count]:
        """One block's parameters and MACs, by attribute (a subclass may add its own)."""
        return [
            norm("norm1", s.dim, s.n * s.dim),
            self.attention.count(s.dim, self.heads, s.n),
            norm("norm2", s.dim, s.n * s.dim),
            self.mlp.count(s.dim, self.hidden(s.dim), s.n),
        ]

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        block = Count.group("", self.block_parts(s))
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    label: ClassVar[str] = "transformer"

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"{self.label} ({self.attention.kind})", str(self.depth), str(self.heads))

    def num_blocks(self) -> int:
        return self.depth
