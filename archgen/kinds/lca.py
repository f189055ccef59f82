"""CeiT's layer-wise class-token attention: the deepest class token attends over those of every block."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from archgen.counting import Count, linear, matmul, norm, parameter
from archgen.errors import KindError
from archgen.kinds.base import Kind, Model, Row, StageKey, Step, Tokens
from archgen.kinds.ceit import LayerClassTokens

if TYPE_CHECKING:  # the registry resolves these slot unions at import time
    MlpSlot = Kind


class LayerClassAttention(Step):
    """One block over the L collected class tokens (+ ``pos_layer_embed``, zero-initialised).

    Only the last token is a query (q from the first third of ``qkv``, k and v from the rest, same
    parameters); it is also the residual: ``x = last + proj(attn)``, ``x = x + mlp(norm2(x))``.
    No drop path. The output is that one token, (B, 1, C).
    """

    slot = "stage"
    template = "lca.j2"
    imports = ("import torch.nn.functional as F",)

    kind: Literal["lca"] = Field(
        description="Layer-wise class-token attention (official `lca`, `pos_layer_embed`); reads the class "
        "tokens a `leff_blocks` stage collected."
    )
    key: StageKey
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="MLP hidden width = int(dim * mlp_ratio).")
    mlp: MlpSlot = Field(description="Feed-forward of the block, stored as `feedforward`.")

    def children(self) -> tuple[Kind, ...]:
        return (self.mlp,)

    def out(self, s: Tokens, m: Model) -> Tokens:
        if not isinstance(s, LayerClassTokens) or not s.layers:
            raise KindError("kind", "lca needs a preceding stage that collects class tokens (leff_blocks)")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        return Tokens(s.dim, 0, 0, 1, "seq")

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        assert isinstance(s, LayerClassTokens)
        dim, layers = s.dim, s.layers
        qkv = linear("qkv", dim, 3 * dim, 0)  # parameters only: the token counts differ for q and kv
        q_macs = dim * dim  # the last token only
        kv_macs = layers * dim * 2 * dim
        attn = Count.group(
            "attn",
            [
                replace(qkv, macs=q_macs + kv_macs),
                matmul("attn_matmuls", 2 * layers * dim),  # one query row against L keys, then L values
                linear("proj", dim, dim, 1),
            ],
        )
        mlp = replace(self.mlp.count(dim, self.hidden(dim), 1), name="feedforward")
        block = Count.group(self.key, [norm("norm2", dim, dim), norm("norm1", dim, layers * dim), attn, mlp])
        return Count.group("", [parameter("pos_layer_embed", layers * dim), block])

    def row(self, s: Tokens, m: Model) -> Row:
        layers = s.layers if isinstance(s, LayerClassTokens) else 0
        return Row(f"class attention over {layers} layers", "1", str(self.heads))
