"""A stage: ``depth`` copies of one residual block, the unit of composition.

A block is its residual branches in order, each ``x + drop_path(ls(op(norm(x))))``. Any op of the
catalogue (token mixers, feed-forwards) works in any branch where the token layout fits; the stage
decides how the tokens reach it (the sequence, the patch grid, or the class token alone), so an op
never knows which paper's block it sits in. Behaviours that belong to a stage are options any stage
takes: update the class token only (CaiT, VOLO), hand each block's class token on (CeiT's LCA), join
prefix tokens (CaiT), continue another stage's block container (DeepViT's last re-attention blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from archgen.base import Model, Op, OpCtx, Part, Row, StageKey, Step, Strict, Tokens
from archgen.blocks.drop_path import DropPath
from archgen.blocks.layerscale import LayerScale
from archgen.counting import Count, norm, parameter
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.pyformat import def_line

if TYPE_CHECKING:  # the catalogue resolves the op union at import time
    OpSlot = Op

Attr = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=40)]
# Block constructor arguments in order; the rates come from the model's constructor.
ARGS = ("dim", "num_heads", "hidden", "drop_path", "attn_drop", "proj_drop")
RATES = {"attn_drop": "attn_drop_rate", "proj_drop": "proj_drop_rate"}


class LayerScaleSpec(Strict):
    """A learned per-channel scale of the branch output, initialised small (CaiT, DeiT III)."""

    init: float = Field(gt=0, le=10, description="Initial value of every channel's scale (write 1.0e-5).")
    keys: Literal["ls", "gamma"] = Field(
        default="ls",
        description="State-dict layout: `ls` is timm's `ls1.gamma` (a LayerScale module per branch), `gamma` "
        "CaiT's bare parameters `gamma_1`, `gamma_2`.",
    )


class Branch(Strict):
    """One residual branch: ``x + drop_path(layerscale(op(norm(x))))``."""

    norm: Literal["layernorm", "none"] = Field(
        default="layernorm", description="Pre-norm of the branch input (`norm<i>`, i counting branches from 1)."
    )
    op: OpSlot = Field(description="Token mixer or feed-forward; a bare kind name (`op: mlp`) takes its defaults.")
    layerscale: LayerScaleSpec | None = Field(
        default=None, description="LayerScale of the branch output (default: the stage's `layerscale`)."
    )
    scale: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="DeepViT's scale adjustment s: the norm sees s * x and the branch output is divided by s.",
    )

    @field_validator("op", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        return {"kind": value} if isinstance(value, str) else value


@dataclass(frozen=True)
class BlockCode:
    """A block class as the emitter writes it (every decision made)."""

    args: tuple[str, ...]  # constructor arguments: dim, num_heads, hidden, drop_path
    init: tuple[str, ...]
    forward: tuple[str, ...]
    square: bool = False  # the forward finds the side of the square patch grid (grid_side)

    @property
    def header(self) -> str:
        """The ``def __init__`` line, broken as ruff format breaks it when too long for one line."""
        args = ", ".join(f"{a}: {'float' if a in RATES or a == 'drop_path' else 'int'}" for a in self.args)
        return def_line("__init__", f"self, {args}", "None", 4)


class Blocks(Step):
    """``depth`` identical residual blocks stored as ``<key>.0`` … ``<key>.<depth-1>``."""

    slot = "stage"

    kind: Literal["blocks"] = Field(default="blocks", description="A stage of residual blocks (the default kind).")
    key: StageKey
    continues: StageKey | None = Field(
        default=None,
        description="Key of the stage just before whose block container this one extends: its blocks are "
        "numbered on (DeepViT-S: `blocks.11` … `blocks.15` after eleven plain blocks).",
    )
    depth: int = Field(ge=1, le=1000, description="Number of blocks.")
    heads: int | None = Field(default=None, ge=1, le=1024, description="Attention heads; must divide the width.")
    head_dim: int | None = Field(
        default=None, ge=1, le=4096, description="Width per head, instead of `heads` (heads = width / head_dim)."
    )
    mlp_ratio: float | None = Field(
        default=None, gt=0, le=64, description="Feed-forward hidden width = int(width * mlp_ratio)."
    )
    block: tuple[Branch, ...] = Field(min_length=1, max_length=8, description="The residual branches, in order.")
    layerscale: LayerScaleSpec | None = Field(
        default=None, description="LayerScale on every branch that sets none of its own (CaiT, DeiT III)."
    )
    updates: Literal["all", "cls"] = Field(
        default="all",
        description="`cls`: every block writes the class token only; the other tokens are read, never changed "
        "(CaiT's and VOLO's class-attention stages).",
    )
    joins: tuple[Literal["cls", "dist", "reg"], ...] = Field(
        default=(),
        max_length=3,
        description="Prefix tokens that join the sequence right before this stage (CaiT: `[cls]`).",
    )
    collect_cls: bool = Field(
        default=False, description="Hand each block's class token on to layer-wise class attention (CeiT's `lca`)."
    )
    stochastic_depth: bool = Field(
        default=True, description="Blocks take a drop-path rate from the model's linear schedule."
    )
    order: tuple[Attr, ...] | None = Field(
        default=None,
        max_length=32,
        description="Declaration order of the block's modules when the reference's differs from branch order "
        "(CeiT declares `norm2` first); it orders state_dict keys, hence optimizer states.",
    )

    @field_validator("joins")
    @classmethod
    def _once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each prefix token at most once")
        return value

    # --- shapes -----------------------------------------------------------------------------------

    def layout(self, s: Tokens) -> str:
        """The layout the blocks run on: a sequence if any op reads one (grid ops then see the patches as
        a grid inside the block), the grid if the ops read grids or single tokens and no prefix token is in."""
        reads = {b.op.reads for b in self.block}
        if "seq" in reads or self.updates == "cls" or self.collect_cls or s.prefix:
            return "seq"
        return "grid" if "grid" in reads else s.layout

    def needs(self, s: Tokens) -> str | None:
        return self.layout(s)

    def resolve_heads(self, dim: int) -> int:
        if self.heads is not None and self.head_dim is not None:
            raise KindError("head_dim", "give `heads` or `head_dim`, not both")
        if self.head_dim is not None:
            if dim % self.head_dim:
                raise KindError("head_dim", f"{self.head_dim} does not divide the token width {dim}")
            return dim // self.head_dim
        if self.heads is None:
            return 0
        if dim % self.heads:
            raise KindError("heads", f"{self.heads} does not divide the token width {dim}")
        return self.heads

    def hidden(self, dim: int) -> int:
        return int(dim * self.mlp_ratio) if self.mlp_ratio is not None else 0

    def ls(self, b: Branch) -> LayerScaleSpec | None:
        return b.layerscale or self.layerscale

    def attrs(self) -> list[tuple[str | None, str, str | None]]:
        """(norm, op, layerscale) attribute names per branch: ``norm1``, ``attn``, ``ls1``; a repeated op
        name is numbered (``attn``, ``attn2``)."""
        out, seen = [], {}
        for i, b in enumerate(self.block, 1):
            name = b.op.key or b.op.attr
            seen[name] = seen.get(name, 0) + 1
            op = b.op.key or (name if seen[name] == 1 else f"{name}{seen[name]}")
            spec = self.ls(b)
            ls = None if spec is None else (f"ls{i}" if spec.keys == "ls" else f"gamma_{i}")
            out.append((None if b.norm == "none" else f"norm{i}", op, ls))
        return out

    def op_tokens(self, b: Branch, s: Tokens) -> Tokens:
        """What the op of branch ``b`` reads when the blocks see ``s``."""
        if self.updates == "cls" and b.op.reads == "token":
            return Tokens(s.dim, 0, 0, groups=("cls",), prefix=1)
        if b.op.reads == "grid":
            return Tokens(s.dim, s.h, s.w, "grid")
        return s

    def ctx(self, b: Branch, s: Tokens) -> OpCtx:
        return OpCtx(s.dim, self.resolve_heads(s.dim), self.hidden(s.dim), self.op_tokens(b, s))

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout == "image":
            raise KindError("kind", "blocks need tokens; a stem makes them")
        heads = self.resolve_heads(s.dim)
        names = [a for attr in self.attrs() for a in attr if a and not a.startswith("gamma_")]
        # every attribute the block class sets: an op key must not replace a sibling (norm1, ls1, drop_path)
        taken = [a for attr in self.attrs() for a in attr if a] + (["drop_path"] if self.stochastic_depth else [])
        for i, b in enumerate(self.block):
            if b.op.key is not None and taken.count(b.op.key) > 1:
                raise KindError(f"block[{i}].op.key", f"'{b.op.key}' is already an attribute of the block")
        if len(set(names)) != len(names):
            raise KindError("block", f"two modules would be named alike: {', '.join(names)}; set an op's `key`")
        for i, b in enumerate(self.block):
            op = b.op
            where = f"block[{i}].op"
            if "num_heads" in op.args and not heads:
                raise KindError("heads", f"required by {op.kind} in block[{i}]: give `heads` or `head_dim`")
            if "hidden" in op.args and self.mlp_ratio is None:
                raise KindError("mlp_ratio", f"required by {op.kind} in block[{i}]")
            if "hidden" in op.args and self.hidden(s.dim) < 1:
                raise KindError("mlp_ratio", f"{self.mlp_ratio} leaves {op.kind} no hidden width at width {s.dim}")
            if op.writes_first and self.updates != "cls":
                why = "writes the class token only: use it in a stage with `updates: cls`"
                raise KindError(f"{where}.kind", f"{op.kind} {why}")
            if op.reads == "grid" and self.updates == "cls":
                why = "changes the patch tokens only; a stage with `updates: cls` writes the class token alone"
                raise KindError(f"{where}.kind", f"{op.kind} {why}")
            if op.reads == "grid" and s.h != s.w and self.layout(s) == "seq":
                raise KindError(f"{where}.kind", f"{op.kind} needs the patches as a square grid, not {s.h}x{s.w}")
            try:
                op.check(self.ctx(b, s))
            except KindError as exc:
                raise KindError(f"{where}.{exc.field}", exc.message) from None
        if (self.updates == "cls" or self.collect_cls) and s.groups[:1] != ("cls",):
            field = "updates" if self.updates == "cls" else "collect_cls"
            raise KindError(field, f"`{field}` needs the class token first in the sequence")
        if self.order is not None and sorted(self.order) != sorted(names):
            raise KindError("order", f"must list each of the block's modules once: {', '.join(names)}")
        return s.with_(collected=s.collected + self.depth) if self.collect_cls else s

    # --- counts -----------------------------------------------------------------------------------

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        parts: list[Count] = []
        for b, (norm_attr, op_attr, ls_attr) in zip(self.block, self.attrs(), strict=True):
            seen = self.op_tokens(b, s)
            if norm_attr:
                normed = seen if b.op.reads == "token" else s  # a grid op's norm runs on the whole sequence
                parts.append(norm(norm_attr, s.dim, normed.n * s.dim))
            op = b.op.count(self.ctx(b, s))
            parts.append(op.renamed(op_attr))
            if ls_attr and ls_attr.startswith("gamma_"):
                parts.append(parameter(ls_attr, s.dim))
            elif ls_attr:
                parts.append(Count.group(ls_attr, [parameter("gamma", s.dim)]))
        block = Count.group("", parts)
        return Count.group(self.key, block.repeat([str(i) for i in range(self.depth)]))

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        forward = _ClassForward(self, s) if self.updates == "cls" else _Forward(self, s)

        def block(x: T) -> T:
            if not tape.checkpointing:
                return forward.trace(tape, x)
            tape.save(x)  # a checkpointed block keeps its input and recomputes the rest in backward
            with tape.unrecorded():
                return forward.trace(tape, x)

        x, tape.blocks = tape.repeat(x, self.depth, block)
        return x

    def row(self, s: Tokens, m: Model) -> Row:
        ops = " + ".join(b.op.kind for b in self.block)
        notes = [f"{self.updates} only" if self.updates == "cls" else ""]
        notes.append("LayerScale" if any(self.ls(b) for b in self.block) else "")
        notes.append("collects cls" if self.collect_cls else "")
        extra = ", ".join(n for n in notes if n)
        heads = self.resolve_heads(s.dim)
        return Row(f"{ops} ({extra})" if extra else ops, str(self.depth), str(heads) if heads else "-")

    def num_blocks(self) -> int:
        return self.depth if self.stochastic_depth else 0

    # --- code -------------------------------------------------------------------------------------

    def helpers(self) -> tuple[Part, ...]:
        drop = (DropPath(),) if self.stochastic_depth else ()
        ls = (LayerScale(),) if any((s := self.ls(b)) and s.keys == "ls" for b in self.block) else ()
        return (*drop, *ls, *(b.op for b in self.block))

    def identity(self, s: Tokens, m: Model) -> str:
        """Everything that shapes the block class: stages with equal identities share one class."""
        fields = {"block", "layerscale", "updates", "stochastic_depth", "order"}
        wraps = self.layout(s) == "seq" and any(b.op.reads == "grid" for b in self.block)
        return repr((self.model_dump(include=fields), self.layout(s), s.prefix if wraps else 0, m.norm_eps))

    def args(self, s: Tokens) -> tuple[str, ...]:
        used = (
            {"dim"} | {a for b in self.block for a in b.op.args} | ({"drop_path"} if self.stochastic_depth else set())
        )
        return tuple(a for a in ARGS if a in used)

    def entry(self, s: Tokens, name: str, offset: int) -> str:
        """The stage's blocks in its container: ``*[Block(384, 6, 1536, dpr[i], ...) for i in range(12)]``."""
        values = {"dim": str(s.dim), "num_heads": str(self.resolve_heads(s.dim)), "hidden": str(self.hidden(s.dim))}
        values |= RATES | {"drop_path": "dpr[i]" if offset == 0 else f"dpr[{offset} + i]"}
        args = ", ".join(values[a] for a in self.args(s))
        return f"*[{name}({args}) for {'i' if self.stochastic_depth else '_'} in range({self.depth})]"

    def code(self, s: Tokens, m: Model, op_name: dict[str, str]) -> BlockCode:
        """The block class: constructor lines and the forward, given the class names of the ops."""
        attrs = self.attrs()
        modules: list[tuple[str, str]] = []
        params: list[str] = []
        for b, (norm_attr, op_attr, ls_attr) in zip(self.block, attrs, strict=True):
            if norm_attr:
                modules.append((norm_attr, f"nn.LayerNorm(dim, eps={m.norm_eps})"))
            modules.append((op_attr, f"{op_name[b.op.identity()]}({', '.join(b.op.args)})"))
            ls = self.ls(b)
            if ls is not None and ls.keys == "gamma":
                params.append(f"self.{ls_attr} = nn.Parameter(torch.full((dim,), {ls.init}))")
            elif ls is not None:
                modules.append((str(ls_attr), f"LayerScale(dim, {ls.init})"))
        order = self.order
        if order is not None:
            modules.sort(key=lambda item: order.index(item[0]))
        init = [f"self.{name} = {expr}" for name, expr in modules]
        if self.order is not None:
            init.insert(0, "# declared in the reference's order, which is its state_dict (and optimizer state) order")
        if self.stochastic_depth:
            init.append("self.drop_path = DropPath(drop_path)")
        forward = _ClassForward(self, s) if self.updates == "cls" else _Forward(self, s)
        return BlockCode(self.args(s), (*init, *params), tuple(forward.lines()), forward.wraps)


class _Forward:
    """``x = x + branch(x)`` for every branch; grid ops see the patch tokens as a grid."""

    def __init__(self, stage: Blocks, s: Tokens) -> None:
        self.stage, self.s = stage, s
        self.wraps = stage.layout(s) == "seq" and any(b.op.reads == "grid" for b in stage.block)

    def residual(self, b: Branch, expr: str, ls: str | None) -> str:
        if ls and ls.startswith("gamma_"):
            expr = f"self.{ls} * {expr}"
        elif ls:
            expr = f"self.{ls}({expr})"
        if b.scale != 1.0:
            expr = f"{expr} / {b.scale}"
        return f"self.drop_path({expr})" if self.stage.stochastic_depth else expr

    def normed(self, b: Branch, norm_attr: str | None, x: str) -> str:
        inp = f"{x} * {b.scale}" if b.scale != 1.0 else x
        return f"self.{norm_attr}({inp})" if norm_attr else inp

    # The traces below run the forward that ``lines`` writes, on symbolic tensors (archgen.memory).

    def traced_residual(self, tape: Tape, b: Branch, y: T, ls: str | None) -> T:
        y = tape.mul(y) if ls else y  # LayerScale: the scale's gradient needs the branch output
        return tape.pointwise(y) if b.scale != 1.0 else y

    def traced_norm(self, tape: Tape, b: Branch, norm_attr: str | None, x: T) -> T:
        x = tape.pointwise(x) if b.scale != 1.0 else x
        return tape.layer_norm(x) if norm_attr else x

    def trace(self, tape: Tape, x: T) -> T:
        p = self.s.prefix
        for b, (norm_attr, _, ls_attr) in zip(self.stage.block, self.stage.attrs(), strict=True):
            y = self.traced_norm(tape, b, norm_attr, x)
            c = self.stage.ctx(b, self.s)
            if b.op.reads == "grid" and self.wraps:
                side = math.isqrt(x.shape[1] - p)
                if p:
                    grid = b.op.memory(tape, y[:, p:].unflatten(1, (side, side)), c).flatten(1, 2)
                    y = tape.cat([y[:, :p], grid], dim=1)
                else:
                    y = b.op.memory(tape, y.unflatten(1, (side, side)), c).flatten(1, 2)
            else:
                y = b.op.memory(tape, y, c)
            x = tape.pointwise(x, self.traced_residual(tape, b, y, ls_attr))  # x + branch
        return x

    def lines(self) -> list[str]:
        out = []
        scales = {b.scale for b in self.stage.block if b.scale != 1.0}
        if scales:
            s = ", ".join(str(v) for v in sorted(scales))
            out.append(f"# scale adjustment (DeepViT): the norms see x * {s}, the branches are divided by it")
        p = self.s.prefix
        if self.wraps:
            out.append(f"side = grid_side(x.shape[1]{f' - {p}' if p else ''})  # the patch tokens form a square grid")
        for b, (norm_attr, op_attr, ls_attr) in zip(self.stage.block, self.stage.attrs(), strict=True):
            normed = self.normed(b, norm_attr, "x")
            if b.op.reads == "grid" and self.wraps:
                out.append(f"y = {normed}")
                if p:
                    out.append(f"grid = self.{op_attr}(y[:, {p}:].unflatten(1, (side, side))).flatten(1, 2)")
                    out.append(f"y = torch.cat((y[:, :{p}], grid), dim=1)  # prefix tokens pass {op_attr} unchanged")
                else:
                    out.append(f"y = self.{op_attr}(y.unflatten(1, (side, side))).flatten(1, 2)")
                expr = "y"
            else:
                expr = f"self.{op_attr}({normed})"
            out.append(f"x = x + {self.residual(b, expr, ls_attr)}")
        out[-1] = "return " + out[-1].removeprefix("x = ")
        return out


class _ClassForward(_Forward):
    """Only the class token is written: ``cls = cls + branch(...)``; the other tokens are read, unchanged."""

    def lines(self) -> list[str]:
        out = ["cls = x[:, :1]  # (B, 1, C): the only token these blocks write"]
        changed = False  # whether x[:, :1] is stale (a later full-sequence op must see the new class token)
        for b, (norm_attr, op_attr, ls_attr) in zip(self.stage.block, self.stage.attrs(), strict=True):
            if b.op.reads == "token":
                expr = f"self.{op_attr}({self.normed(b, norm_attr, 'cls')})"
            else:
                seq = "torch.cat((cls, x[:, 1:]), dim=1)" if changed else "x"
                expr = f"self.{op_attr}({self.normed(b, norm_attr, seq)})"
                if not b.op.writes_first:
                    expr += "[:, :1]"
            out.append(f"cls = cls + {self.residual(b, expr, ls_attr)}")
            changed = True
        out.append("return torch.cat((cls, x[:, 1:]), dim=1)  # the other tokens pass unchanged")
        return out

    def trace(self, tape: Tape, x: T) -> T:
        cls = x[:, :1]
        changed = False
        for b, (norm_attr, _, ls_attr) in zip(self.stage.block, self.stage.attrs(), strict=True):
            c = self.stage.ctx(b, self.s)
            if b.op.reads == "token":
                y = b.op.memory(tape, self.traced_norm(tape, b, norm_attr, cls), c)
            else:
                seq = tape.cat([cls, x[:, 1:]], dim=1) if changed else x
                y = b.op.memory(tape, self.traced_norm(tape, b, norm_attr, seq), c)
                y = y if b.op.writes_first else y[:, :1]
            cls = tape.pointwise(cls, self.traced_residual(tape, b, y, ls_attr))
            changed = True
        return tape.cat([cls, x[:, 1:]], dim=1)
