"""CaiT's class-attention stage: the class token alone attends to itself and the frozen patch tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul, norm, parameter
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens

if TYPE_CHECKING:  # the registry resolves this slot union at import time
    MlpSlot = Kind


class ClassAttention(Step):
    """``depth`` blocks that update only the class token: the query comes from the class token, keys
    and values from [class token, patch tokens]; LayerScale on both residual branches.

    The stage joins the class token itself (``joins_prefix_tokens``): it enters with the patch tokens
    only and leaves with ``[cls, patches]``, the patch tokens untouched by it.
    """

    slot = "stage"
    template = "class_attention.j2"
    imports = ("import torch.nn.functional as F",)
    joins_prefix_tokens: ClassVar[bool] = True

    kind: Literal["class_attention"] = Field(
        description="Class-attention blocks (timm CaiT `LayerScaleBlockClassAttn`, key `blocks_token_only`)."
    )
    key: StageKey
    depth: int = Field(ge=1, le=100, description="Number of class-attention blocks.")
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")
    init_values: float = Field(gt=0, le=10, description="Initial LayerScale value (write 1.0e-5).")
    qkv_bias: bool = Field(default=True, description="Bias on the q, k and v projections.")
    mlp: MlpSlot = Field(description="Feed-forward layer applied to the class token.")

    def children(self) -> tuple[Kind, ...]:
        return (self.mlp,)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq":
            raise KindError("kind", f"class attention needs a token sequence, got a {s.layout}")
        if m.prefix_tokens != ("cls",):
            raise KindError("kind", "class attention joins exactly one prefix token: `prefix_tokens: [cls]`")
        if s.prefix:
            raise KindError("kind", "class attention joins the class token itself; it must not be in yet")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        return s.with_(prefix=1)

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        d = s.dim
        t = self.out(s, m).n  # keys and values: class token + patch tokens
        attn = Count.group(
            "attn",
            [
                linear("q", d, d, 1, bias=self.qkv_bias),
                linear("k", d, d, t, bias=self.qkv_bias),
                linear("v", d, d, t, bias=self.qkv_bias),
                matmul("attn_matmuls", 2 * t * d),  # one query: q @ k^T and attn @ v, t x head_dim per head
                linear("proj", d, d, 1),
            ],
        )
        block = Count.group(
            "",
            [
                parameter("gamma_1", d),
                parameter("gamma_2", d),
                norm("norm1", d, t * d),
                attn,
                norm("norm2", d, d),
                self.mlp.count(d, self.hidden(d), 1),
            ],
        )
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("class attention", str(self.depth), str(self.heads))
