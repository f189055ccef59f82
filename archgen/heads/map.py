"""Attention-pool (MAP) head: a learned query attends over the tokens, then a residual MLP; a linear classifier
on its output (SigLIP; timm's ``global_pool='map'``, ``AttentionPoolLatent``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Part, Row, Tokens
from archgen.counting import Count, linear, matmul, parameter
from archgen.errors import KindError
from archgen.feedforwards.mlp import Mlp
from archgen.heads.head import Head
from archgen.memory import T, Tape
from archgen.norms import LAYERNORM, Act, Norm, NormValue, act_field


class MapHead(Head):
    """``attn_pool``: learned latent queries (``latent``, projected by ``q``; one unless ``latents``) attend over
    the patch tokens (keys and values from ``kv``); ``proj``, then ``x + mlp(norm(x))``; the first latent's output,
    or their mean, to ``head``. Prefix tokens are left out of the pool (timm's rule for ``map``). The spec's final
    norm stays on every token, before the pool."""

    pool = "map"  # timm's global_pool
    own_init = True  # the latent starts as timm's: truncated normal of std dim ** -0.5

    kind: Literal["map"] = Field(
        description="Attention pooling by a learned query, then `head` (timm `global_pool='map'`, SigLIP)."
    )
    heads: int = Field(ge=1, le=1024, description="Attention heads of the pool (timm: the model's `num_heads`).")
    mlp_ratio: float = Field(default=4.0, gt=0, le=64, description="The pool's MLP hidden width = int(dim * ratio).")
    qkv_bias: bool = Field(default=True, description="Biases of `q` and `kv`.")
    qk_norm: NormValue = Field(default=None, description="Norm of each head's query and key (`q_norm`, `k_norm`).")
    norm: NormValue = Field(default=LAYERNORM, description="Norm before the pool's MLP (`attn_pool.norm`).")
    act: Act = act_field(what="The pool's MLP activation (timm passes the model's `act_layer`)")
    latents: int = Field(default=1, ge=1, le=256, description="Latent queries (timm `latent_len`).")
    latent_pool: Literal["token", "avg"] = Field(
        default="token",
        description="With several latents: the first one's output (`token`) or their mean (`avg`) goes to `head` "
        "(timm `pool_type`).",
    )

    def check(self, s: Tokens, m: Model) -> None:
        if not s.patches:
            raise KindError("kind", "an attention pool needs patch tokens")
        if s.dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {s.dim}")

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio)

    def mlp(self) -> Mlp:
        return Mlp(kind="mlp", act=self.act)

    def helpers(self) -> tuple[Part, ...]:
        return (self.mlp(),)

    def mlp_args(self) -> str:
        """The MLP's constructor arguments inside the pool (no dropout: timm's pool MLP has none)."""
        return ", ".join({"dim": "dim", "hidden": "hidden", "proj_drop": "0.0"}[a] for a in self.mlp().args)

    def count(self, s: Tokens, m: Model, fc_norm: Norm | None = None) -> Count:
        c, n, hd, L = s.dim, s.patches, s.dim // self.heads, self.latents
        qk_norm = self.qk_norm
        qk = [qk_norm.count(name, hd, tokens * c) for name, tokens in (("q_norm", L), ("k_norm", n))] if qk_norm else []
        pool = [
            parameter("latent", L * c),
            linear("q", c, c, L, self.qkv_bias),  # the latents are projected once for all images
            linear("kv", c, 2 * c, n, self.qkv_bias),
            *qk,
            matmul("attn_matmuls", 2 * L * n * c),  # L queries: q @ k^T and attn @ v, N x head_dim per head
            linear("proj", c, c, L),
            *([self.norm.count("norm", c, L * c)] if self.norm is not None else []),
            Count.group("mlp", [linear("fc1", c, self.hidden(c), L), linear("fc2", self.hidden(c), c, L)]),
        ]
        head = linear("head", c, m.num_classes, 1) if m.num_classes else Count("head")
        return Count.group("", [Count.group("attn_pool", pool), head])

    def inputs(self, tape: Tape, x: T, s: Tokens, fc_norm: Norm | None) -> dict[str, T]:
        x = x[:, s.prefix :] if s.prefix else x
        B, N, C = x.shape
        H = self.heads
        L = self.latents
        q = tape.linear(tape.buffer((1, L, C)), C).view(1, L, H, C // H).transpose(1, 2).expand(B, H, L, C // H)
        k, v = tape.linear(x, 2 * C).view(B, N, 2, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm is not None:
            q, k = self.qk_norm.memory(tape, q), self.qk_norm.memory(tape, k)
        x = tape.linear(tape.sdpa(q, k, v).transpose(1, 2).reshape(B, L, C), C)
        y = self.norm.memory(tape, x) if self.norm is not None else x
        y = tape.linear(tape.act(tape.linear(y, self.hidden(C)), self.act), C)
        x = tape.pointwise(x, y)
        return {"head": tape.mean(x, 1) if L > 1 and self.latent_pool == "avg" else x[:, 0]}

    def row(self, s: Tokens, m: Model) -> Row:
        latents = f", {self.latents} latents, {self.latent_pool}" if self.latents > 1 else ""
        return Row(f"attention pool ({self.heads} heads{latents}), linear")
