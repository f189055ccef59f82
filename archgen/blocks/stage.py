"""A stage: ``depth`` copies of one residual block, the unit of composition.

A block is its residual branches in order, each ``x + drop_path(ls(op(norm(x))))``. Any op of the
catalogue (token mixers, feed-forwards) works in any branch where the token layout fits; the stage
decides how the tokens reach it (the sequence, the patch grid, or the class token alone), so an op
never knows which paper's block it sits in. Behaviours that belong to a stage are options any stage
takes: update the class token only (CaiT, VOLO), hand each block's class token on (CeiT's LCA), join
prefix tokens (CaiT), continue another stage's block container (DeepViT's last re-attention blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from archgen.base import Model, Op, OpCtx, Part, Row, StageKey, Step, Strict, Tokens
from archgen.blocks.drop_path import DropPath
from archgen.blocks.layerscale import LayerScale
from archgen.counting import Count, parameter
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.naming import path_class
from archgen.norms import LAYERNORM, Norm, NormValue
from archgen.pyformat import def_line
from archgen.reserved import check_stage_key

if TYPE_CHECKING:  # the catalogue resolves the op union at import time
    OpSlot = Op

Attr = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=40)]
# Block constructor arguments in order; the rates come from the model's constructor, `grid` (the patch grid
# (h, w) of the stage, for an op whose weights depend on it: a relative position table) from the stage, and
# `index` (the block's position in its stage, for an op that differs from block to block: Swin's shifted
# windows at odd positions) from the stage's loop.
ARGS = ("dim", "num_heads", "hidden", "drop_path", "attn_drop", "proj_drop", "grid", "index")
RATES = {"attn_drop": "attn_drop_rate", "proj_drop": "proj_drop_rate"}
TYPES = {"drop_path": "float", "attn_drop": "float", "proj_drop": "float", "grid": "tuple[int, int]"}


def _kind(value: object) -> object:
    """An op written as its bare kind name (`op: mlp`) is the op with its defaults."""
    return {"kind": value} if isinstance(value, str) else value


class LayerScaleSpec(Strict):
    """A learned per-channel scale of the branch output, initialised small (CaiT, DeiT III)."""

    init: float = Field(gt=0, le=10, description="Initial value of every channel's scale (write 1.0e-5).")
    keys: Literal["ls", "gamma"] = Field(
        default="ls",
        description="State-dict layout: `ls` is timm's `ls1.gamma` (a LayerScale module per branch), `gamma` "
        "CaiT's bare parameters `gamma_1`, `gamma_2`.",
    )


class BranchKeys(Strict):
    """Attribute names of a branch's modules where the reference's differ from archgen's defaults
    (`norm<i>`, `ls<i>`; a second norm of the branch `norm<i>_out`, `norm<i>_post`)."""

    norm: Attr | None = Field(default=None, description="The pre-norm (timm's ParallelScalingBlock: `in_norm`).")
    out_norm: Attr | None = Field(default=None, description="The norm of the branch output.")
    post_norm: Attr | None = Field(default=None, description="The norm after the residual sum.")
    layerscale: Attr | None = Field(default=None, description="The LayerScale (`ls` for one shared by all ops).")


class Branch(Strict):
    """One residual branch, ``x + drop_path(layerscale(out_norm(f(norm(x)))))``, optionally followed by a
    ``post_norm`` of the sum. ``f`` is one op (``op``), several ops of one normed input whose outputs are
    summed (``ops``, ViT-22B's parallel block), or parallel paths each with its own norm and LayerScale
    (``paths``, stored as a ModuleList under ``key``: timm's ParallelThingsBlock)."""

    norm: NormValue = Field(
        default=LAYERNORM,
        description="Pre-norm of the branch input (`norm<i>`, i counting branches from 1); `none` for none.",
    )
    op: OpSlot | None = Field(
        default=None, description="Token mixer or feed-forward; a bare kind name (`op: mlp`) takes its defaults."
    )
    ops: tuple[OpSlot, ...] = Field(
        default=(), max_length=8, description="Ops that read the same normed input; their outputs are summed."
    )
    paths: tuple[Branch, ...] = Field(
        default=(),
        max_length=8,
        description="Parallel paths, each a branch of one op with its own norm and LayerScale (`key.<j>.norm`, "
        "`key.<j>.<op>`, `key.<j>.ls`); their outputs are summed into one residual.",
    )
    key: Attr | None = Field(default=None, description="Attribute name of the paths' ModuleList (`attns`).")
    out_norm: NormValue = Field(
        default=None,
        description="Norm of the branch output before LayerScale (Swin-v2's res-post-norm; with a "
        "pre-norm, the sandwich norm).",
    )
    post_norm: NormValue = Field(
        default=None, description="Norm after the residual sum, `x = norm(x + f(x))` (the original post-norm)."
    )
    layerscale: LayerScaleSpec | Literal[False] | None = Field(
        default=None, description="LayerScale of the branch output (default: the stage's; `false`: none here)."
    )
    scale: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="DeepViT's scale adjustment s: the norm sees s * x and the branch output is divided by s.",
    )
    keys: BranchKeys = Field(default=BranchKeys(), description="Attribute names where the reference's differ.")

    _shorthand = field_validator("op", mode="before")(lambda value: _kind(value))

    @field_validator("ops", mode="before")
    @classmethod
    def _shorthands(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return [_kind(v) for v in value]
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Branch:
        forms = [name for name in ("op", "ops", "paths") if getattr(self, name)]
        if len(forms) != 1:
            raise ValueError("give exactly one of `op`, `ops` (two or more) and `paths` (two or more)")
        if (self.ops and len(self.ops) < 2) or (self.paths and len(self.paths) < 2):
            raise ValueError(f"`{forms[0]}` sums two or more; a single one is `op`")
        if any(op.flat for op in (*self.ops, *(p.op for p in self.paths if p.op is not None))):
            raise ValueError("a flat op (its modules are the block's) stands alone as a branch's `op`")
        if self.op is not None and self.op.flat and self.op.key is not None:
            raise ValueError(f"{self.op.kind} is flat: its modules are the block's and take no `key`")
        if self.paths:
            if self.key is None:
                raise ValueError("`paths` need a `key`: the attribute name of their ModuleList")
            if ("norm" in self.model_fields_set and self.norm is not None) or self.out_norm or self.layerscale:
                raise ValueError("with `paths`, each path has its own norm and LayerScale")
            if any(p.op is None or p.out_norm or p.post_norm or p.scale != 1.0 for p in self.paths):
                raise ValueError("a path is one op with its `norm` and `layerscale`")
        elif self.key is not None:
            raise ValueError("`key` names the ModuleList of `paths`; an op's attribute name is its own `key`")
        return self

    @property
    def pre(self) -> Norm | None:
        return None if self.paths else self.norm

    def all_ops(self) -> tuple[Op, ...]:
        if self.paths:
            return tuple(p.op for p in self.paths if p.op is not None)
        return (self.op,) if self.op is not None else self.ops


@dataclass(frozen=True)
class Names:
    """The attribute names of one branch's modules on the block (None: the branch has no such module)."""

    norm: str | None
    ops: tuple[str, ...]  # one per op; for paths, each path's op attribute inside its module
    out_norm: str | None
    post_norm: str | None
    ls: str | None
    flat: tuple[str, ...] = ()  # the modules a flat op sets on the block (then ``ops`` is empty)
    plain: tuple[str, ...] = ()  # its plain attributes (num_heads)

    def modules(self) -> list[str]:
        return [n for n in (self.norm, *self.ops, *self.flat, self.out_norm, self.post_norm, self.ls) if n]


@dataclass(frozen=True)
class BlockCode:
    """A block class as the emitter writes it (every decision made)."""

    args: tuple[str, ...]  # constructor arguments: dim, num_heads, hidden, drop_path
    init: tuple[str, ...]
    forward: tuple[str, ...]
    square: bool = False  # the forward finds the patch tokens' (h, w) (token_grid)
    paths: tuple[PathCode, ...] = ()  # classes of parallel paths the block holds
    rope: bool = False  # the forward takes the model's rotary table for its attention

    @property
    def header(self) -> str:
        return _header(self.args)


def _header(args: tuple[str, ...]) -> str:
    """The ``def __init__`` line, broken as ruff format breaks it when too long for one line."""
    typed = ", ".join(f"{a}: {TYPES.get(a, 'int')}" for a in args)
    return def_line("__init__", f"self, {typed}", "None", 4)


class Insert(Strict):
    """A residual op run once between two blocks of a stage, ``x = x + op(x)``, its module stored outside the
    blocks' container (Twins' conditional position encoding: `pos_block.i` after each stage's first block)."""

    after: int = Field(ge=1, le=1000, description="How many of the stage's blocks run before it (Twins: 1).")
    key: Annotated[
        str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[0-9]+)?$", max_length=60), AfterValidator(check_stage_key)
    ] = Field(description="Its attribute path: `pos_block.0` (an entry of a ModuleList of the model) or a name.")
    op: OpSlot = Field(description="The op; a bare kind name (`op: peg`) takes its defaults.")

    _shorthand = field_validator("op", mode="before")(lambda value: _kind(value))


class Pattern(Strict):
    """One block of a stage's ``cycle``: its residual branches, in order."""

    block: tuple[Branch, ...] = Field(min_length=1, max_length=8, description="The residual branches, in order.")


class Blocks(Step):
    """``depth`` residual blocks stored as ``<key>.0`` … ``<key>.<depth-1>``: copies of one ``block``, or
    blocks that take the patterns of a ``cycle`` in turn (Twins-SVT: local, global, local, ...)."""

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
    block: tuple[Branch, ...] = Field(
        default=(), max_length=8, description="The residual branches, in order (every block the same)."
    )
    cycle: tuple[Pattern, ...] = Field(
        default=(),
        max_length=8,
        description="Blocks that differ within the stage, instead of `block`: block j takes pattern "
        "j % len(cycle), each pattern its own block class (Twins-SVT alternates local and global attention).",
    )
    insert: Insert | None = Field(
        default=None, description="A residual op between two of the blocks (Twins' position encoding, `peg`)."
    )
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
    stochastic_depth: bool | Literal["zero"] = Field(
        default=True,
        description="Blocks take a drop-path rate from the model's schedule (`drop_path_schedule`); `false`: "
        "none, and no place in the schedule; `zero`: none, but they hold their places (timm's VOLO outlookers: the "
        "blocks after them start further up the schedule).",
    )
    order: tuple[Attr, ...] | None = Field(
        default=None,
        max_length=32,
        description="Declaration order of the block's modules when the reference's differs from branch order "
        "(CeiT declares `norm2` first); it orders state_dict keys, hence optimizer states.",
    )

    @model_validator(mode="after")
    def _block_or_cycle(self) -> Blocks:
        if bool(self.block) == bool(self.cycle):
            raise ValueError("give exactly one of `block` (one block, repeated) and `cycle` (two or more)")
        if self.cycle and len(self.cycle) < 2:
            raise ValueError("`cycle` alternates two or more patterns; a single one is `block`")
        if self.cycle and self.order is not None:
            raise ValueError("`order` names one block's modules: it does not apply to a `cycle`")
        if self.insert is not None:
            if self.insert.after > self.depth:
                raise ValueError(f"`insert.after` is {self.insert.after}, but the stage has {self.depth} blocks")
            if self.continues is not None or self.collect_cls or self.updates == "cls":
                raise ValueError("`insert` runs between the blocks of a stage that updates all tokens in its own "
                                 "container and collects no class tokens")  # fmt: skip
            if self.insert.key.partition(".")[0] == self.key.partition(".")[0]:
                raise ValueError(f"`insert.key` '{self.insert.key}' must lie outside the blocks' container")
        return self

    def patterns(self) -> tuple[Blocks, ...]:
        """The stage as one stage per kind of block it holds: itself, or one per pattern of its cycle. A
        pattern keeps the cycle, so that every block runs on the layout all of them share."""
        if not self.block:
            return tuple(self.model_copy(update={"block": p.block}) for p in self.cycle)
        return (self,)

    def branches(self) -> tuple[Branch, ...]:
        """Every branch of the stage's blocks (of all patterns of a cycle)."""
        return self.block or tuple(b for p in self.cycle for b in p.block)

    def pattern(self, j: int) -> Blocks:
        """The stage whose block is block ``j``."""
        kinds = self.patterns()
        return kinds[j % len(kinds)]

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
        reads = {op.reads for op in self.every_op()}
        if "seq" in reads or self.updates == "cls" or self.collect_cls or s.prefix:
            return "seq"
        return "grid" if "grid" in reads else s.layout

    def needs(self, s: Tokens) -> str | None:
        return self.layout(s)

    def ops(self) -> tuple[Op, ...]:
        return tuple(op for b in self.branches() for op in b.all_ops())

    @property
    def rewindows(self) -> bool:
        """Whether an op of the blocks rescales its window at set_input_size."""
        return any(op.rewindows for op in self.every_op())

    @property
    def takes_rope(self) -> bool:
        """Whether the blocks take the model's rotary table (an op of theirs rotates q and k with it)."""
        return any(op.takes_rope for op in self.every_op())

    def every_op(self) -> tuple[Op, ...]:
        """The ops of every block of the stage; for a pattern of a cycle, of the whole cycle."""
        branches = [b for p in self.cycle for b in p.block] if self.cycle else self.block
        inserted = (self.insert.op,) if self.insert is not None else ()
        return (*(op for b in branches for op in b.all_ops()), *inserted)

    @property
    def size_free(self) -> bool:
        return all(op.size_free for op in self.ops())

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
        if b.layerscale is False:
            return None
        return b.layerscale or self.layerscale

    def names(self) -> list[Names]:
        """Attribute names per branch: ``norm1``, ``attn``, ``ls1``; a repeated op name is numbered
        (``attn``, ``attn2``); a second norm in a branch is ``norm<i>_out`` or ``norm<i>_post``."""
        out, seen = [], {}

        def op_name(op: Op) -> str:
            name = op.key or op.attr
            seen[name] = seen.get(name, 0) + 1
            return op.key or (name if seen[name] == 1 else f"{name}{seen[name]}")

        for i, b in enumerate(self.block, 1):
            k = b.keys
            pre = None if b.pre is None else k.norm or f"norm{i}"
            out_norm = None if b.out_norm is None else k.out_norm or (f"norm{i}_out" if pre else f"norm{i}")
            post = None if b.post_norm is None else k.post_norm or (f"norm{i}_post" if pre or out_norm else f"norm{i}")
            spec = self.ls(b)
            ls = None if spec is None or b.paths else k.layerscale or (f"ls{i}" if spec.keys == "ls" else f"gamma_{i}")
            if b.op is not None and b.op.flat:
                out.append(Names(pre, (), out_norm, post, ls, b.op.modules, b.op.attributes))
                continue
            ops = (str(b.key),) if b.paths else tuple(op_name(op) for op in b.all_ops())
            out.append(Names(pre, ops, out_norm, post, ls))
        return out

    def op_tokens(self, op: Op, s: Tokens) -> Tokens:
        """What ``op`` reads when the blocks see ``s``."""
        if self.updates == "cls" and op.reads == "token":
            return Tokens(s.dim, 0, 0, groups=("cls",), prefix=1)
        if op.reads == "grid":
            return Tokens(s.dim, s.h, s.w, "grid")
        return s

    def ctx(self, op: Op, s: Tokens) -> OpCtx:
        return OpCtx(s.dim, self.resolve_heads(s.dim), self.hidden(s.dim), self.op_tokens(op, s))

    def written(self, b: Branch, s: Tokens) -> int:
        """Tokens a branch writes: the class token alone in a stage that updates it only."""
        return 1 if self.updates == "cls" else s.n

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout == "image":
            raise KindError("kind", "blocks need tokens; a stem makes them")
        if self.insert is not None:
            self._check_insert(s)
        if not self.block:  # a cycle: each pattern must fit (its errors name the pattern)
            for j, pattern in enumerate(self.patterns()):
                try:
                    out = pattern.out(s, m)
                except KindError as exc:
                    field = f"cycle[{j}].{exc.field}" if exc.field.startswith("block") else exc.field
                    raise KindError(field, exc.message) from None
            return out
        heads = self.resolve_heads(s.dim)
        all_names = self.names()
        names = [a for n in all_names for a in n.modules() if not a.startswith("gamma_")]
        plain = [a for n in all_names for a in n.plain]  # a flat op's num_heads
        # every attribute the block class sets: an op key must not replace a sibling (norm1, ls1, drop_path)
        taken = [a for n in all_names for a in n.modules()] + plain + (["drop_path"] if self.drops else [])
        for i, b in enumerate(self.block):
            for j, op in enumerate(b.all_ops()):
                where = f"block[{i}].op" if b.op is not None else f"block[{i}].{'ops' if b.ops else 'paths'}[{j}]"
                if op.key is not None and taken.count(op.key) > 1 and not b.paths:
                    raise KindError(f"{where}.key", f"'{op.key}' is already an attribute of the block")
        if len(set(names + plain)) != len(names + plain):
            alike = ", ".join(names + plain)
            raise KindError("block", f"two modules would be named alike: {alike}; set an op's `key`")
        for i, b in enumerate(self.block):
            if self.updates == "cls" and (b.ops or b.paths):
                raise KindError(f"block[{i}]", "a stage with `updates: cls` takes one op per branch")
            if self.updates == "cls" and b.op is not None and b.op.flat:
                raise KindError(f"block[{i}].op.kind", f"{b.op.kind} is flat: it runs in a stage that updates all")
            for j, op in enumerate(b.all_ops()):
                where = f"block[{i}].op" if b.op is not None else f"block[{i}].{'ops' if b.ops else 'paths'}[{j}]"
                if b.paths:
                    where += ".op"
                    if op.takes_rope:
                        raise KindError(f"{where}.rope", "parallel paths cannot take the rotary table yet")
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
                try:
                    op.check(self.ctx(op, s))
                except KindError as exc:
                    raise KindError(f"{where}.{exc.field}", exc.message) from None
        if (self.updates == "cls" or self.collect_cls) and s.groups[:1] != ("cls",):
            field = "updates" if self.updates == "cls" else "collect_cls"
            raise KindError(field, f"`{field}` needs the class token first in the sequence")
        if self.order is not None and sorted(self.order) != sorted(names):
            raise KindError("order", f"must list each of the block's modules once: {', '.join(names)}")
        return s.with_(collected=s.collected + self.depth) if self.collect_cls else s

    def _check_insert(self, s: Tokens) -> None:
        op = self.insert.op if self.insert is not None else None
        assert op is not None
        if op.takes_rope or self.takes_rope:
            raise KindError("insert", "runs between blocks that take no rotary table")
        if op.writes_first:
            raise KindError("insert.op.kind", f"{op.kind} writes the class token only")
        if op.reads == "grid" and self.layout(s) == "seq":
            raise KindError("insert.op.kind", f"{op.kind} needs the blocks on the patch grid: no prefix tokens "
                            "and no op of theirs reading the sequence")  # fmt: skip
        if "num_heads" in op.args and not self.resolve_heads(s.dim):
            raise KindError("heads", f"required by {op.kind} in `insert`: give `heads` or `head_dim`")
        if "hidden" in op.args and self.hidden(s.dim) < 1:
            raise KindError("mlp_ratio", f"required by {op.kind} in `insert`")
        try:
            op.check(self.ctx(op, s))
        except KindError as exc:
            raise KindError(f"insert.op.{exc.field}", exc.message) from None

    # --- counts -----------------------------------------------------------------------------------

    def _ls_count(self, spec: LayerScaleSpec, name: str, dim: int) -> Count:
        if spec.keys == "gamma":
            return parameter(name, dim)
        return Count.group(name, [parameter("gamma", dim)])

    def count(self, s: Tokens, m: Model) -> Count:
        self.out(s, m)
        kinds = [p.block_count(s) for p in self.patterns()]
        blocks = Count.group(self.key, [kinds[j % len(kinds)].renamed(str(j)) for j in range(self.depth)])
        if self.insert is None:
            return blocks
        op = self.insert.op  # a module of the model beside the blocks' container: the step's two attributes
        return Count.group("", [blocks, op.count(self.ctx(op, s)).renamed(self.insert.key)])

    def block_count(self, s: Tokens) -> Count:
        """One block's modules (of a stage whose blocks are all alike: a pattern of a cycle)."""
        parts: list[Count] = []
        for b, n in zip(self.block, self.names(), strict=True):
            written = self.written(b, s) * s.dim
            if b.paths:
                paths = []
                for j, p in enumerate(b.paths):
                    assert p.op is not None
                    inner = [] if p.norm is None else [p.norm.count("norm", s.dim, s.n * s.dim)]
                    inner.append(p.op.count(self.ctx(p.op, s)).renamed(p.op.key or p.op.attr))
                    spec = self.ls(p)
                    inner += [] if spec is None else [Count.group("ls", [parameter("gamma", s.dim)])]
                    paths.append(Count.group(str(j), inner))
                parts.append(Count.group(n.ops[0], paths))
            else:
                if b.pre is not None and n.norm:
                    op = b.all_ops()[0]
                    normed = self.op_tokens(op, s) if op.reads == "token" else s  # a grid op's norm: all tokens
                    parts.append(b.pre.count(n.norm, s.dim, normed.n * s.dim))
                if n.flat:  # a flat op's modules are the block's
                    parts.extend(b.all_ops()[0].count(self.ctx(b.all_ops()[0], s)).children)
                for op, name in zip(() if n.flat else b.all_ops(), n.ops, strict=True):
                    parts.append(op.count(self.ctx(op, s)).renamed(name))
            if b.out_norm is not None and n.out_norm:
                parts.append(b.out_norm.count(n.out_norm, s.dim, written))
            spec = self.ls(b)
            if spec is not None and n.ls:
                parts.append(self._ls_count(spec, n.ls, s.dim))
            if b.post_norm is not None and n.post_norm:
                parts.append(b.post_norm.count(n.post_norm, s.dim, written))
        order = self.order
        if order is not None:  # the block's modules in declaration order, as the module lists them
            parts.sort(key=lambda c: order.index(c.name) if c.name in order else len(order))
        return Count.group("", parts)

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        forwards = [_ClassForward(p, s) if self.updates == "cls" else _Forward(p, s) for p in self.patterns()]

        def block(forward: _Forward, x: T) -> T:
            if not tape.checkpointing:
                return forward.trace(tape, x)
            tape.save(x)  # a checkpointed block keeps its inputs and recomputes the rest in backward
            if self.takes_rope and tape.rope is not None:
                tape.save(tape.rope)
            with tape.unrecorded():
                return forward.trace(tape, x)

        if len(forwards) == 1 and self.insert is None:
            x, tape.blocks = tape.repeat(x, self.depth, lambda x: block(forwards[0], x))
            return x
        per_block = []  # a cycle or an insert: every block traced (they save different bytes)
        for j in range(self.depth):
            before = tape.total
            x = block(forwards[j % len(forwards)], x)
            if self.insert is not None and j + 1 == self.insert.after:  # x + op(x), counted with this block
                x = tape.pointwise(x, self.insert.op.memory(tape, x, self.ctx(self.insert.op, s)))
            per_block.append(tape.total - before)
        tape.blocks = per_block
        return x

    def row(self, s: Tokens, m: Model) -> Row:
        def branch(b: Branch) -> str:
            kinds = [op.kind for op in b.all_ops()]
            return kinds[0] if len(kinds) == 1 else f"({' | '.join(kinds)})"

        ops = " / ".join(" + ".join(branch(b) for b in p.block) for p in self.patterns())
        notes = [f"{self.updates} only" if self.updates == "cls" else ""]
        scaled = any(self.ls(b) or any(self.ls(p) for p in b.paths) for b in self.branches())
        notes.append("LayerScale" if scaled else "")
        notes.append("collects cls" if self.collect_cls else "")
        notes.append(f"{self.insert.op.kind} after {self.insert.after}" if self.insert is not None else "")
        extra = ", ".join(n for n in notes if n)
        heads = self.resolve_heads(s.dim)
        return Row(f"{ops} ({extra})" if extra else ops, str(self.depth), str(heads) if heads else "-")

    def num_blocks(self) -> int:
        """Places in the stochastic-depth schedule."""
        return self.depth if self.stochastic_depth else 0

    @property
    def drops(self) -> bool:
        """Whether the blocks hold a DropPath (a rate of their own from the schedule)."""
        return self.stochastic_depth is True

    def no_weight_decay(self) -> tuple[str, ...]:
        """The insert's parameters where its op says so (a position encoding)."""
        if self.insert is None:
            return ()
        return tuple(f"{self.insert.key}.{name}" for name in self.insert.op.no_weight_decay())

    def trunc_normal(self) -> tuple[str, ...]:
        return ()  # the blocks' and the insert's modules take their own initialisation

    # --- code -------------------------------------------------------------------------------------

    def helpers(self) -> tuple[Part, ...]:
        drop = (DropPath(),) if self.drops else ()
        branches = [*self.branches(), *(p for b in self.branches() for p in b.paths)]
        ls = (LayerScale(),) if any((s := self.ls(b)) and s.keys == "ls" for b in branches) else ()
        inserted = (self.insert.op,) if self.insert is not None else ()
        return (*drop, *ls, *self.ops(), *inserted)

    def identity(self, s: Tokens, m: Model) -> str:
        """Everything that shapes the block class: stages with equal identities share one class."""
        fields = {"block", "layerscale", "updates", "order"}
        dump, passed = self.model_dump(include=fields), self.passed()
        for branch in dump.get("block", ()):  # the values the block passes on do not shape its class
            for op in ([branch["op"]] if branch.get("op") else []) + list(branch.get("ops") or ()):
                for name in passed:
                    op.pop(name, None)
        return repr((dump, self.drops, self.layout(s), s.prefix if self.wraps(s) else 0, m.norm_eps))

    def wraps(self, s: Tokens) -> bool:
        """Whether the block reads a sequence and runs grid ops on its patch tokens (they need their (h, w))."""
        return self.layout(s) == "seq" and any(op.reads == "grid" for op in self.ops())

    def grid_in_block(self, s: Tokens) -> bool:
        """Whether the block's own forward (not only a parallel path's) runs a grid op on the patch tokens."""
        return self.wraps(s) and any(op.reads == "grid" for b in self.branches() if not b.paths for op in b.all_ops())

    def args(self, s: Tokens) -> tuple[str, ...]:
        used = {"dim"} | {a for op in self.ops() for a in op.args} | ({"drop_path"} if self.drops else set())
        return tuple(a for a in ARGS if a in used | ({"grid"} if self.wraps(s) else set())) + tuple(self.passed())

    def passed(self) -> dict[str, Any]:
        """The ops' runtime options (``Op.runtime``) the block takes in its constructor and hands to the one op
        of its branches that has each (stages that differ only there share the block class); an option two
        ops have, or a parallel path's op, is written into the op's call instead."""
        ops = [op for b in self.block if not b.paths for op in b.all_ops()]
        names = [name for op in ops for name in op.runtime]
        return {name: getattr(op, name) for op in ops for name in op.runtime if names.count(name) == 1}

    def call(self, op: Op, name: str, passed: dict[str, Any]) -> str:
        """``name(dim, num_heads, ...)``: the op's constructor call in the block, its runtime options passed on
        or written out."""
        args = (a if a not in op.runtime or a in passed else f"{a}={getattr(op, a)!r}" for a in op.args)
        return f"{name}({', '.join(args)})"

    def entry(self, s: Tokens, name: Callable[[Blocks], str], offset: int, grid: str = "") -> str:
        """The stage's blocks in its container: ``*[Block(384, 6, 1536, dpr[i], ...) for i in range(12)]``, a
        cycle's ``A(...) if i % 2 == 0 else B(...)``; ``name`` gives a pattern's class name, ``grid`` the
        patch grid as code of the image size (``(H // 16, W // 16)``)."""
        values = self._values(s, offset, grid)
        kinds = self.patterns()
        given = [values | {k: repr(v) for k, v in p.passed().items()} for p in kinds]
        calls = [f"{name(p)}({', '.join(v[a] for a in p.args(s))})" for p, v in zip(kinds, given, strict=True)]
        element = calls[-1]
        for j in reversed(range(len(kinds) - 1)):
            element = f"{calls[j]} if i % {len(kinds)} == {j} else {element}"
        uses_i = self.drops or len(kinds) > 1 or any("index" in p.args(s) for p in kinds)
        i = "i" if uses_i else "_"
        return f"*[{element} for {i} in range({self.depth})]"

    def _values(self, s: Tokens, offset: int, grid: str) -> dict[str, str]:
        """Code of each constructor argument a block (or the insert's op) takes."""
        values = {"dim": str(s.dim), "num_heads": str(self.resolve_heads(s.dim)), "hidden": str(self.hidden(s.dim))}
        drop_path = "dpr[i]" if offset == 0 else f"dpr[{offset} + i]"
        return values | RATES | {"drop_path": drop_path, "grid": grid, "index": "i"}

    def inserted(self, s: Tokens, name: str, grid: str = "") -> str:
        """The insert's module as constructed (``PosConv(64)``), given its op's class name."""
        assert self.insert is not None
        op = self.insert.op
        values = self._values(s, 0, grid) | {a: f"{a}={getattr(op, a)!r}" for a in op.runtime}
        return f"{name}({', '.join(values[a] for a in op.args)})"

    def _ls_module(self, spec: LayerScaleSpec, name: str) -> tuple[str, str] | str:
        """A LayerScale module (name, expression), or the line setting CaiT's bare parameter."""
        if spec.keys == "gamma":
            return f"self.{name} = nn.Parameter(torch.full((dim,), {spec.init}))"
        return (name, f"LayerScale(dim, {spec.init})")

    def code(self, s: Tokens, m: Model, op_name: dict[str, str]) -> BlockCode:
        """The block class: constructor lines and the forward, given the class names of the ops."""
        modules: list[tuple[str, str]] = []
        params: list[str] = []
        attrs: list[str] = []  # plain attributes of flat ops, first
        paths: list[PathCode] = []

        def add(item: tuple[str, str] | str) -> None:
            (params.append if isinstance(item, str) else modules.append)(item)  # type: ignore[arg-type]

        passed = self.passed()
        for b, n in zip(self.block, self.names(), strict=True):
            if b.pre is not None and n.norm:
                modules.append((n.norm, b.pre.code("dim", m)))
            if b.paths:
                path_codes = []
                for p in b.paths:
                    path_codes.append(pc := _distinct(self._path(p, s, m, op_name), paths))
                    if pc not in paths:
                        paths.append(pc)
                if len(set(path_codes)) == 1:
                    pc = path_codes[0]
                    expr = f"nn.ModuleList([{pc.name}({', '.join(pc.args)}) for _ in range({len(b.paths)})])"
                else:
                    expr = "nn.ModuleList([" + ", ".join(f"{pc.name}({', '.join(pc.args)})" for pc in path_codes) + "])"
                modules.append((n.ops[0], expr))
            for op, name in zip(() if b.paths else b.all_ops(), n.ops, strict=False):
                modules.append((name, self.call(op, op_name[op.identity()], passed)))
            if n.flat:
                for line in _inline(b.all_ops()[0], "init", m=m):
                    name, expr = line.removeprefix("self.").split(" = ", 1)
                    (modules.append((name, expr)) if name in n.flat else attrs.append(line))
            if b.out_norm is not None and n.out_norm:
                modules.append((n.out_norm, b.out_norm.code("dim", m)))
            spec = self.ls(b)
            if spec is not None and n.ls:
                add(self._ls_module(spec, n.ls))
            if b.post_norm is not None and n.post_norm:
                modules.append((n.post_norm, b.post_norm.code("dim", m)))
        order = self.order
        if order is not None:
            modules.sort(key=lambda item: order.index(item[0]))
        init = attrs + [f"self.{name} = {expr}" for name, expr in modules]
        if self.order is not None:
            init.insert(0, "# declared in the reference's order, which is its state_dict (and optimizer state) order")
        if self.grid_in_block(s):
            init.insert(0, GRID_LINE)
        if self.drops and not all(b.paths for b in self.block):
            init.append("self.drop_path = DropPath(drop_path)")
        forward = _ClassForward(self, s) if self.updates == "cls" else _Forward(self, s)
        lines = tuple(forward.lines())
        return BlockCode(self.args(s), (*init, *params), lines, forward.wraps, tuple(paths), rope=self.takes_rope)

    def _path(self, p: Branch, s: Tokens, m: Model, op_name: dict[str, str]) -> PathCode:
        """The class of one parallel path: its norm, op, LayerScale and stochastic depth as timm stores them."""
        op = p.op
        assert op is not None
        attr = op.key or op.attr
        init = [] if p.norm is None else [f"self.norm = {p.norm.code('dim', m)}"]
        init.append(f"self.{attr} = {self.call(op, op_name[op.identity()], {})}")
        lines: list[str] = []
        normed = "self.norm(x)" if p.norm is not None else "x"
        if op.reads == "grid" and self.wraps(s):  # the patches as a grid, prefix tokens unchanged
            init.insert(0, GRID_LINE)
            lines.append(_grid_line(s.prefix))
            lines.append(f"y = {normed}")
            lines.extend(_on_grid(attr, "y", s.prefix, "y"))
            expr = "y"
        else:
            expr = f"self.{attr}({normed})"
        spec = self.ls(p)
        if spec is not None:
            init.append(f"self.ls = LayerScale(dim, {spec.init})")
            expr = f"self.ls({expr})"
        if self.drops:
            init.append("self.drop_path = DropPath(drop_path)")
            expr = f"self.drop_path({expr})"
        used = {"dim", *op.args} | ({"drop_path"} if self.drops else set())
        args = tuple(a for a in ARGS if a in used | ({"grid"} if op.reads == "grid" and self.wraps(s) else set()))
        return PathCode(path_class(op_name[op.identity()]), args, tuple(init), (*lines, f"return {expr}"))


def _distinct(pc: PathCode, known: list[PathCode]) -> PathCode:
    """``pc`` under a name no other path class of the block has: paths of one op that differ in their norm
    or LayerScale are two classes (``MlpPath``, ``MlpPath2``)."""
    same = [k for k in known if k.name == pc.name or (k.name.startswith(pc.name) and k.name[len(pc.name) :].isdigit())]
    match = next((k for k in same if replace(k, name=pc.name) == pc), None)
    if match is not None:
        return match
    return replace(pc, name=f"{pc.name}{len(same) + 1}") if same else pc


def _inline(op: Op, macro: str, **values: object) -> list[str]:
    """The lines a flat op's template writes into the block: its ``init`` or ``forward`` macro."""
    from archgen.emit import environment  # emit imports the catalogue, which imports this module

    text = getattr(environment().get_template(op.template()).module, macro)(op, **values)
    return str(text).strip("\n").splitlines()


@dataclass(frozen=True)
class PathCode:
    """The class of a parallel path (timm stores each as a Sequential of norm, op, ls, drop_path)."""

    name: str
    args: tuple[str, ...]
    init: tuple[str, ...]
    forward: tuple[str, ...]

    @property
    def header(self) -> str:
        return _header(self.args)


GRID_LINE = "self.grid = grid  # the patch tokens' (h, w) at the size the block is built for"


def _grid_line(prefix: int) -> str:
    """The line finding the (h, w) of the patch tokens of the block's input ``x``."""
    return f"h, w = token_grid(x.shape[1]{f' - {prefix}' if prefix else ''}, self.grid)  # the patch tokens' grid"


def _on_grid(attr: str, y: str, prefix: int, result: str) -> list[str]:
    """Lines running grid op ``attr`` on the patch tokens of sequence ``y`` (an (h, w) grid), the prefix tokens
    passing it unchanged; the output in ``result``."""
    if not prefix:
        return [f"{result} = self.{attr}({y}.unflatten(1, (h, w))).flatten(1, 2)"]
    return [
        f"grid = self.{attr}({y}[:, {prefix}:].unflatten(1, (h, w))).flatten(1, 2)",
        f"{result} = torch.cat(({y}[:, :{prefix}], grid), dim=1)  # prefix tokens pass {attr} unchanged",
    ]


def _top_level_sum(expr: str) -> bool:
    """Whether ``expr`` is a sum outside any brackets (``a(x) + b(x)``)."""
    depth = 0
    for i, ch in enumerate(expr):
        depth += (ch in "([") - (ch in ")]")
        if depth == 0 and expr.startswith(" + ", i):
            return True
    return False


class _Forward:
    """``x = x + branch(x)`` for every branch; grid ops see the patch tokens as a grid."""

    def __init__(self, stage: Blocks, s: Tokens) -> None:
        self.stage, self.s = stage, s
        self.wraps = stage.wraps(s)

    def residual(self, b: Branch, n: Names, expr: str) -> str:
        """The branch output as added to x; a sum of ops stays one term (``x + (a + b)``, the reference's
        order of additions)."""
        summed = _top_level_sum(expr)

        def term(e: str) -> str:
            return f"({e})" if summed else e

        if n.out_norm:
            expr, summed = f"self.{n.out_norm}({expr})", False
        if n.ls and n.ls.startswith("gamma_"):
            expr, summed = f"self.{n.ls} * {term(expr)}", False
        elif n.ls:
            expr, summed = f"self.{n.ls}({expr})", False
        if b.scale != 1.0:
            expr, summed = f"{term(expr)} / {b.scale}", False
        if self.stage.drops and not b.paths:  # each path drops itself
            expr, summed = f"self.drop_path({expr})", False
        return term(expr)

    def normed(self, b: Branch, n: Names, x: str) -> str:
        inp = f"{x} * {b.scale}" if b.scale != 1.0 else x
        return f"self.{n.norm}({inp})" if n.norm else inp

    @staticmethod
    def call(op: Op, attr: str, y: str) -> str:
        """``self.attn(y)``, with the rotary table for an op that takes it."""
        return f"self.{attr}({y}, rope)" if op.takes_rope else f"self.{attr}({y})"

    def apply(self, op: Op, attr: str, y: str, out: list[str], result: str = "y") -> str:
        """The expression of ``op`` on ``y``; a grid op in a sequence block sees the patches as a grid (the
        lines doing so go to ``out`` and leave the op's output in ``result``)."""
        if not (op.reads == "grid" and self.wraps):
            return self.call(op, attr, y)
        out.extend(_on_grid(attr, y, self.s.prefix, result))
        return result

    # The traces below run the forward that ``lines`` writes, on symbolic tensors (archgen.memory).

    def traced_residual(self, tape: Tape, b: Branch, n: Names, y: T) -> T:
        y = b.out_norm.memory(tape, y) if b.out_norm is not None and n.out_norm else y
        y = tape.mul(y) if n.ls else y  # LayerScale: the scale's gradient needs the branch output
        return tape.pointwise(y) if b.scale != 1.0 else y

    def traced_norm(self, tape: Tape, b: Branch, x: T) -> T:
        x = tape.pointwise(x) if b.scale != 1.0 else x
        return b.pre.memory(tape, x) if b.pre is not None else x

    def traced_apply(self, tape: Tape, op: Op, y: T) -> T:
        c = self.stage.ctx(op, self.s)
        if not (op.reads == "grid" and self.wraps):
            return op.memory(tape, y, c)
        p, hw = self.s.prefix, (self.s.h, self.s.w)
        if not p:
            return op.memory(tape, y.unflatten(1, hw), c).flatten(1, 2)
        grid = op.memory(tape, y[:, p:].unflatten(1, hw), c).flatten(1, 2)
        return tape.cat([y[:, :p], grid], dim=1)

    def traced_branch(self, tape: Tape, b: Branch, x: T) -> T:
        """The branch's output before its out_norm and LayerScale."""
        if b.paths:
            outs = []
            for p in b.paths:
                assert p.op is not None
                y = self.traced_apply(tape, p.op, p.norm.memory(tape, x) if p.norm is not None else x)
                outs.append(tape.mul(y) if self.stage.ls(p) else y)
            return self.traced_sum(tape, outs)
        y = self.traced_norm(tape, b, x)
        return self.traced_sum(tape, [self.traced_apply(tape, op, y) for op in b.all_ops()])

    @staticmethod
    def traced_sum(tape: Tape, outs: list[T]) -> T:
        total = outs[0]
        for y in outs[1:]:
            total = tape.pointwise(total, y)
        return total

    def trace(self, tape: Tape, x: T) -> T:
        for b, n in zip(self.stage.block, self.stage.names(), strict=True):
            y = self.traced_residual(tape, b, n, self.traced_branch(tape, b, x))
            x = tape.pointwise(x, y)  # x + branch
            x = b.post_norm.memory(tape, x) if b.post_norm is not None else x
        return x

    def branch_expr(self, b: Branch, n: Names, out: list[str]) -> str:
        """The expression of the branch's output before its out_norm and LayerScale (lines it needs go to
        ``out``)."""
        if b.paths:
            return " + ".join(f"self.{n.ops[0]}[{j}](x)" for j in range(len(b.paths)))
        normed = self.normed(b, n, "x")
        ops = b.all_ops()
        if n.flat:
            out.extend(_inline(ops[0], "forward", normed=normed))
            return "y"
        if len(ops) == 1:
            if ops[0].reads == "grid" and self.wraps:
                out.append(f"y = {normed}")
                normed = "y"
            return self.apply(ops[0], n.ops[0], normed, out)
        out.append(f"y = {normed}  # the ops below read the same normed input")
        return " + ".join(self.apply(op, name, "y", out, f"y_{name}") for op, name in zip(ops, n.ops, strict=True))

    def lines(self) -> list[str]:
        out = []
        scales = {b.scale for b in self.stage.block if b.scale != 1.0}
        if scales:
            s = ", ".join(str(v) for v in sorted(scales))
            out.append(f"# scale adjustment (DeepViT): the norms see x * {s}, the branches are divided by it")
        p = self.s.prefix
        if self.stage.grid_in_block(self.s):
            out.append(_grid_line(p))
        for b, n in zip(self.stage.block, self.stage.names(), strict=True):
            residual = self.residual(b, n, self.branch_expr(b, n, out))
            if n.post_norm:
                out.append(f"x = self.{n.post_norm}(x + {residual})")
            else:
                out.append(f"x = x + {residual}")
        last = out[-1]
        out[-1] = "return " + (last.removeprefix("x = "))
        return out


class _ClassForward(_Forward):
    """Only the class token is written: ``cls = cls + branch(...)``; the other tokens are read, unchanged."""

    def lines(self) -> list[str]:
        out = ["cls = x[:, :1]  # (B, 1, C): the only token these blocks write"]
        changed = False  # whether x[:, :1] is stale (a later full-sequence op must see the new class token)
        for b, n in zip(self.stage.block, self.stage.names(), strict=True):
            op = b.all_ops()[0]
            if op.reads == "token":
                expr = self.call(op, n.ops[0], self.normed(b, n, "cls"))
            else:
                seq = "torch.cat((cls, x[:, 1:]), dim=1)" if changed else "x"
                expr = self.call(op, n.ops[0], self.normed(b, n, seq))
                if not op.writes_first:
                    expr += "[:, :1]"
            residual = self.residual(b, n, expr)
            out.append(f"cls = self.{n.post_norm}(cls + {residual})" if n.post_norm else f"cls = cls + {residual}")
            changed = True
        out.append("return torch.cat((cls, x[:, 1:]), dim=1)  # the other tokens pass unchanged")
        return out

    def trace(self, tape: Tape, x: T) -> T:
        cls = x[:, :1]
        changed = False
        for b, n in zip(self.stage.block, self.stage.names(), strict=True):
            op = b.all_ops()[0]
            c = self.stage.ctx(op, self.s)
            if op.reads == "token":
                y = op.memory(tape, self.traced_norm(tape, b, cls), c)
            else:
                seq = tape.cat([cls, x[:, 1:]], dim=1) if changed else x
                y = op.memory(tape, self.traced_norm(tape, b, seq), c)
                y = y if op.writes_first else y[:, :1]
            cls = tape.pointwise(cls, self.traced_residual(tape, b, n, y))
            cls = b.post_norm.memory(tape, cls) if b.post_norm is not None else cls
            changed = True
        return tape.cat([cls, x[:, 1:]], dim=1)
