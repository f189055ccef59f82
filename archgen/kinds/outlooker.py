"""VOLO's first stage: pre-norm Outlooker blocks on a channels-last token grid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from archgen.counting import Count, norm
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.drop_path import DropPath

if TYPE_CHECKING:  # the registry resolves these slot unions at import time
    GridAttentionSlot = Kind
    MlpSlot = Kind


class Outlooker(Step):
    """``depth`` blocks x + attn(norm1(x)), x + mlp(norm2(x)) on (B, H, W, C), as ``<key>.0`` …"""

    slot = "stage"
    template = "outlooker.j2"

    kind: Literal["outlooker"] = Field(description="VOLO Outlooker blocks (timm `Outlooker`).")
    key: StageKey
    depth: int = Field(ge=1, le=1000, description="Number of blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")
    attention: GridAttentionSlot = Field(description="Token mixing on the grid (outlook attention).")
    mlp: MlpSlot = Field(description="Feed-forward layer of every block.")

    def children(self) -> tuple[Kind, ...]:
        return (DropPath(), self.attention, self.mlp)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "grid":
            raise KindError("kind", f"outlooker blocks need a token grid, got a {s.layout}")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        try:
            self.attention.check(s, self.heads)
        except KindError as exc:
            raise KindError(f"attention.{exc.field}", exc.message) from None
        return s

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        n = s.h * s.w
        block = Count.group(
            "",
            [
                norm("norm1", s.dim, n * s.dim),
                self.attention.count(s, self.heads),
                norm("norm2", s.dim, n * s.dim),
                self.mlp.count(s.dim, self.hidden(s.dim), n),
            ],
        )
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    def row(self, s: Tokens, m: Model) -> Row:
        a = self.attention
        return Row(f"outlooker (k={a.kernel_size}, s={a.stride})", str(self.depth), str(self.heads))

    def num_blocks(self) -> int:
        return self.depth
