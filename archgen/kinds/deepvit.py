"""DeepViT's stage: pre-norm blocks whose last ones use re-attention, with the official scale adjustment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from archgen.counting import Count, norm
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.drop_path import DropPath
from archgen.kinds.reattention import ReAttention

if TYPE_CHECKING:  # the registry resolves these slot unions at import time
    AttentionSlot = Kind
    MlpSlot = Kind


class ReAttentionStage(Step):
    """``depth`` blocks stored as ``<key>.0`` … ; blocks ``reattention_from`` … ``depth - 1`` use
    re-attention, the earlier ones ``attention``. With scale adjustment s the block is
    ``x + attn(norm1(s x)) / s``, ``x + mlp(norm2(s x)) / s`` (official DeepViT ``adjust_ratio``)."""

    slot = "stage"
    template = "deepvit.j2"

    kind: Literal["reattention_blocks"] = Field(
        description="DeepViT blocks (official `Block` with re_atten): re-attention in the last blocks."
    )
    key: StageKey
    depth: int = Field(ge=1, le=1000, description="Number of blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")
    reattention_from: int = Field(
        default=0, ge=0, le=999, description="First block with re-attention (official apply_transform)."
    )
    scale_adjustment: float = Field(
        default=1.0, gt=0, le=1000, description="s: norms see s*x and branches are divided by s (official)."
    )
    attention: AttentionSlot | None = Field(
        default=None, description="Attention of the blocks before `reattention_from` (needed iff it is > 0)."
    )
    reattention: ReAttention = Field(description="Attention of the blocks from `reattention_from` on.")
    mlp: MlpSlot = Field(description="Feed-forward layer of every block.")

    def children(self) -> tuple[Kind, ...]:
        plain = (self.attention,) if self.attention is not None and self.reattention_from else ()
        return (DropPath(), *plain, self.reattention, self.mlp)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq":
            raise KindError("kind", f"re-attention blocks need a token sequence, got a {s.layout}")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        if self.reattention_from >= self.depth:
            raise KindError("reattention_from", f"must be below depth {self.depth}")
        if self.attention is None and self.reattention_from:
            raise KindError("attention", "the blocks before `reattention_from` need an attention kind")
        if self.attention is not None and not self.reattention_from:
            raise KindError("attention", "every block uses re-attention; drop `attention`")
        return s

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        blocks = []
        for i in range(self.depth):
            attn = self.reattention if i >= self.reattention_from else self.attention
            assert attn is not None
            parts = [
                norm("norm1", s.dim, s.n * s.dim),
                attn.count(s.dim, self.heads, s.n),
                norm("norm2", s.dim, s.n * s.dim),
                self.mlp.count(s.dim, self.hidden(s.dim), s.n),
            ]
            blocks.append(Count.group(str(i), parts))
        return Count.group(self.key, blocks)

    def row(self, s: Tokens, m: Model) -> Row:
        first = self.reattention_from
        where = "all" if first == 0 else f"{first}-{self.depth - 1}"
        return Row(f"re-attention in {where}", str(self.depth), str(self.heads))

    def num_blocks(self) -> int:
        return self.depth
