"""Attention and MLP side by side from one normed input, with one fused input projection (ViT-22B).

The MLP's ``fc1`` and the attention's q, k, v are one Linear (``in_proj``), split after it; the two outputs
are projected back and summed, or projected together from their concatenation (``fuse_out_proj``). timm
stores these modules on the block itself (``ParallelScalingBlock``), so the op is flat: the block declares
its modules and runs its forward inline, and the branch names its norm and LayerScale (`keys:
{norm: in_norm, layerscale: ls}`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Op, OpCtx
from archgen.counting import Count, linear, matmul, parameter
from archgen.memory import T, Tape
from archgen.norms import Act, Activated, NormValue, act_field


class FusedAttentionMlp(Activated, Op):
    """``in_proj`` (dim -> hidden + 3 dim), then attention over q, k, v and ``act`` on the MLP part, each
    projected back to dim (``attn_out_proj``, ``mlp_out_proj``; one ``out_proj`` when fused), summed."""

    attr = "in_proj"
    args = ("dim", "num_heads", "hidden", "attn_drop", "proj_drop")
    class_name = "FusedAttentionMlp"  # names no class: a flat op's modules are the block's
    label = "ParallelScaling"
    flat = True
    attributes = ("num_heads", "attn_drop", "in_split")

    kind: Literal["fused_attn_mlp"] = Field(
        description="Attention and MLP in parallel with fused input projection (ViT-22B; timm "
        "`ParallelScalingBlock`: `in_proj`, `attn_out_proj`, `mlp_out_proj` on the block)."
    )
    qkv_bias: bool = Field(
        default=False,
        description="Bias of `in_proj` (q, k, v and the MLP's hidden part); without it the MLP keeps its own "
        "bias `mlp_bias` and q, k, v have none.",
    )
    qk_norm: NormValue = Field(default=None, description="Norm of each head's queries and keys (`q_norm`, `k_norm`).")
    proj_bias: bool = Field(default=True, description="Bias of the output projections.")
    act: Act = act_field(what="Activation of the MLP's hidden part (`mlp_act`)")
    fuse_out_proj: bool = Field(
        default=False,
        description="One `out_proj` of the concatenated attention and MLP outputs, instead of `attn_out_proj` "
        "and `mlp_out_proj` summed.",
    )

    @property
    def modules(self) -> tuple[str, ...]:  # type: ignore[override]
        bias = () if self.qkv_bias else ("mlp_bias",)
        norms = () if self.qk_norm is None else ("q_norm", "k_norm")
        out = ("out_proj",) if self.fuse_out_proj else ("attn_out_proj", "mlp_out_proj")
        return ("in_proj", *bias, *norms, "mlp_act", "mlp_drop", *out)

    def count(self, c: OpCtx) -> Count:
        n, d, h = c.s.n, c.dim, c.hidden
        parts = [linear("in_proj", d, h + 3 * d, n, bias=self.qkv_bias)]
        parts += [] if self.qkv_bias else [parameter("mlp_bias", h)]
        if self.qk_norm is not None:
            parts += [self.qk_norm.count(f"{x}_norm", d // c.heads, n * d) for x in "qk"]
        parts.append(matmul("attn_matmuls", 2 * n * n * d))  # q @ k^T and attn @ v: N x N x head_dim per head
        if self.fuse_out_proj:
            parts.append(linear("out_proj", d + h, d, n, self.proj_bias))
        else:
            parts += [linear("attn_out_proj", d, d, n, self.proj_bias), linear("mlp_out_proj", h, d, n, self.proj_bias)]
        return Count.group("", parts)

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        B, N, C = x.shape
        h = c.hidden
        y = tape.linear(x, h + 3 * C, bias=self.qkv_bias)
        x_mlp = y[:, :, :h]  # the split's views
        q, k, v = (y[:, :, h + i * C : h + (i + 1) * C].view(B, N, c.heads, C // c.heads) for i in range(3))
        if self.qk_norm is not None:
            q, k = self.qk_norm.memory(tape, q), self.qk_norm.memory(tape, k)
        x_attn = tape.sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x_attn = x_attn.transpose(1, 2).reshape(B, N, C)
        if not self.qkv_bias:
            x_mlp = tape.pointwise(x_mlp, tape.param)  # + mlp_bias
        x_mlp = tape.act(x_mlp, self.act)
        if self.fuse_out_proj:
            return tape.linear(tape.cat([x_attn, x_mlp], dim=-1), C, bias=self.proj_bias)
        return tape.pointwise(tape.linear(x_attn, C, self.proj_bias), tape.linear(x_mlp, C, self.proj_bias))
