"""VOLO's post stage: class-attention blocks that update only the class token.

The stage concatenates the class token itself (``joins_prefix_tokens``). In each block the class
token is the only query; keys and values come from all tokens (class + patches), and the patch
tokens pass through unchanged.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul, norm
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.mlp import Mlp


class VoloClassAttention(Step):
    """``depth`` blocks cls += attn(norm1([cls, x])); cls += mlp(norm2(cls)), stored as ``<key>.0`` …"""

    slot = "stage"
    template = "volo_class_attention.j2"
    imports = ("import torch.nn.functional as F",)
    joins_prefix_tokens: ClassVar[bool] = True

    kind: Literal["volo_class_attention"] = Field(
        description="VOLO class-attention blocks (timm `volo` ClassBlock): q from cls, k/v from all tokens."
    )
    key: StageKey
    depth: int = Field(ge=1, le=100, description="Number of class-attention blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")

    def children(self) -> tuple[Kind, ...]:
        return (Mlp(kind="mlp"),)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq" or s.prefix:
            raise KindError("kind", "class attention needs a patch-token sequence without prefix tokens")
        if m.prefix_tokens != ("cls",):
            raise KindError("kind", "class attention needs `prefix_tokens: [cls]`")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        return s.with_(prefix=1)

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        n = self.out(s, m).n  # class token + patches
        c = s.dim
        attn = Count.group(
            "attn",
            [
                linear("kv", c, 2 * c, n, bias=False),
                linear("q", c, c, 1, bias=False),
                matmul("attn_matmuls", 2 * n * c),  # q @ k^T and attn @ v for one query
                linear("proj", c, c, 1),
            ],
        )
        block = Count.group(
            "",
            [
                norm("norm1", c, n * c),
                attn,
                norm("norm2", c, c),
                Mlp(kind="mlp").count(c, self.hidden(c), 1),
            ],
        )
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("class attention", str(self.depth), str(self.heads))
