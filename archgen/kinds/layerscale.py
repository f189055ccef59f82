"""A stage of LayerScale blocks (CaiT): pre-norm transformer blocks whose residual branches are
scaled per channel by learnable vectors ``gamma_1`` and ``gamma_2``, initialised small."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from archgen.counting import Count, norm, parameter
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.drop_path import DropPath

if TYPE_CHECKING:  # the registry resolves these slot unions at import time
    AttentionSlot = Kind
    MlpSlot = Kind


class LayerScaleTransformer(Step):
    """``depth`` blocks ``x + gamma_1 * attn(norm1(x))``, ``x + gamma_2 * mlp(norm2(x))``."""

    slot = "stage"
    template = "layerscale.j2"

    kind: Literal["layerscale_transformer"] = Field(
        description="Pre-norm LayerScale blocks (timm CaiT `LayerScaleBlock`: `gamma_1`, `gamma_2`)."
    )
    key: StageKey
    depth: int = Field(ge=1, le=1000, description="Number of blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")
    init_values: float = Field(gt=0, le=10, description="Initial LayerScale value (write 1.0e-5).")
    attention: AttentionSlot = Field(description="Token-mixing attention of every block.")
    mlp: MlpSlot = Field(description="Feed-forward layer of every block.")

    def children(self) -> tuple[Kind, ...]:
        return (DropPath(), self.attention, self.mlp)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq":
            raise KindError("kind", f"LayerScale blocks need a token sequence, got a {s.layout}")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        return s

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        block = Count.group(
            "",
            [
                parameter("gamma_1", s.dim),
                parameter("gamma_2", s.dim),
                norm("norm1", s.dim, s.n * s.dim),
                self.attention.count(s.dim, self.heads, s.n),
                norm("norm2", s.dim, s.n * s.dim),
                self.mlp.count(s.dim, self.hidden(s.dim), s.n),
            ],
        )
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"LayerScale ({self.attention.kind})", str(self.depth), str(self.heads))

    def num_blocks(self) -> int:
        return self.depth
