"""CeiT's layer-wise class-token attention: the deepest class token attends over those of every block."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from archgen.base import Model, Op, OpCtx, Part, Row, StageKey, Step, Tokens
from archgen.counting import Count, linear, matmul, norm, parameter
from archgen.errors import KindError
from archgen.memory import T, Tape

if TYPE_CHECKING:  # the catalogue resolves the op union at import time
    OpSlot = Op


class LayerClassAttention(Step):
    """One block over the L class tokens that earlier blocks handed on (``collect_cls``), plus
    ``pos_layer_embed`` (zero-initialised). Only the last token is a query (q from the first third of
    ``qkv``, k and v from the rest, same parameters); it is also the residual: ``x = last + proj(attn)``,
    ``x = x + feedforward(norm2(x))``. No drop path. The output is that one token, (B, 1, C).
    """

    slot = "stage"

    kind: Literal["lca"] = Field(
        description="Layer-wise class-token attention (official CeiT `lca`, `pos_layer_embed`); reads the class "
        "tokens that stages with `collect_cls: true` handed on."
    )
    key: StageKey
    heads: int = Field(ge=1, le=1024, description="Attention heads; must divide the token width.")
    mlp_ratio: float = Field(gt=0, le=64, description="Feed-forward hidden width = int(dim * mlp_ratio).")
    feedforward: OpSlot = Field(
        description="Token-wise feed-forward of the block (CeiT: `mlp`), stored as `feedforward`."
    )

    @field_validator("feedforward", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        return {"kind": value} if isinstance(value, str) else value

    def helpers(self) -> tuple[Part, ...]:
        return (self.feedforward,)

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def _ctx(self, s: Tokens) -> OpCtx:
        return OpCtx(s.dim, self.heads, self.hidden(s.dim), Tokens(s.dim, 0, 0, groups=("cls",), prefix=1))

    def out(self, s: Tokens, m: Model) -> Tokens:
        if not s.collected:
            raise KindError("kind", "lca needs an earlier stage that hands on its class tokens (`collect_cls: true`)")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")
        if self.hidden(s.dim) < 1:
            raise KindError("mlp_ratio", f"{self.mlp_ratio} leaves the feed-forward no hidden width at width {s.dim}")
        if self.feedforward.key is not None:  # the block's attribute is fixed (the reference's state_dict)
            raise KindError("feedforward.key", "the LCA block keeps its feed-forward as `feedforward`; drop `key`")
        if self.feedforward.reads != "token":
            raise KindError("feedforward", f"{self.feedforward.kind} cannot work on a single token")
        self.feedforward.check(self._ctx(s))
        return Tokens(s.dim, 0, 0, groups=("cls",), prefix=1)

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        dim, layers = s.dim, s.collected
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
        ff = replace(self.feedforward.count(self._ctx(s)), name="feedforward")
        block = Count.group(self.key, [norm("norm2", dim, dim), norm("norm1", dim, layers * dim), attn, ff])
        return Count.group("", [parameter("pos_layer_embed", layers * dim), block])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        B, L, C = x.shape[0], s.collected, s.dim
        H = self.heads
        tokens = tape.zeros((B, L, C), like=x)  # torch.stack of the collected class tokens
        x = tape.pointwise(tokens, tape.param)  # + pos_layer_embed
        y = tape.layer_norm(x)  # norm1
        # q and kv use slices of the qkv weight: under autocast each slice is copied (a slice is not cached)
        q = tape.linear(y[:, -1:], C).reshape(B, 1, H, C // H)
        k, v = tape.linear(y, 2 * C).reshape(B, L, 2, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        y = tape.sdpa(q.transpose(1, 2), k, v)
        y = tape.linear(y.transpose(1, 2).reshape(B, 1, C), C)  # proj
        x = tape.pointwise(x[:, -1:], y)  # the last class token + attention
        return tape.pointwise(x, self.feedforward.memory(tape, tape.layer_norm(x), self._ctx(s)))

    def row(self, s: Tokens, m: Model) -> Row:
        return Row(f"class attention over {s.collected} layers", "1", str(self.heads))
