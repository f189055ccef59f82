"""What every part shares: the token state it transforms and the interfaces the compiler calls.

A part is a pydantic model (its schema, ``extra="forbid"``) that also knows how to transform the token
state, count itself and render itself. Its Jinja template is the ``.j2`` file beside its module (one part
per module). The compiler core only calls the methods below; it never looks at a part's fields.
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from archgen.counting import Count
from archgen.memory import T, Tape
from archgen.reserved import check_op_key, check_stage_key

StageKey = Annotated[
    str,
    Field(
        pattern=r"^[a-z_][a-z0-9_]*(\.[0-9]+(\.[a-z_][a-z0-9_]*)?)?$",
        max_length=60,
        description="Attribute path and state_dict prefix: `blocks`, `network.2` (a ModuleList entry), or "
        "`layers.1.blocks` (a named member of a ModuleList entry: a hierarchical model's stage holding its "
        "downsample and its blocks, as timm's Swin and PVT-v2 do).",
    ),
    AfterValidator(check_stage_key),
]

# Prefix-token groups in the order they stand in the sequence (timm's order: class, distillation, registers).
TOKEN_ORDER = ("cls", "dist", "reg")


@dataclass(frozen=True)
class Tokens:
    """The activation between steps: an image, a token grid or a token sequence.

    ``layout`` is ``image`` (B, C, H, W), ``grid`` (B, H, W, C) or ``seq`` (B, N, C) where
    N = prefix + h * w. ``groups`` names the prefix-token groups in the sequence, in order, and ``prefix``
    counts their tokens (a register group holds several). ``collected`` counts the class tokens that
    earlier blocks handed on for layer-wise class attention (the list ``cls_tokens``).
    """

    dim: int
    h: int
    w: int
    layout: str = "seq"
    groups: tuple[str, ...] = ()
    prefix: int = 0
    collected: int = 0

    @property
    def n(self) -> int:
        return self.prefix + self.h * self.w

    @property
    def patches(self) -> int:
        return self.h * self.w

    def shape(self) -> str:
        if self.layout == "image":
            return f"(B, {self.dim}, {self.h}, {self.w})"
        if self.layout == "grid":
            return f"(B, {self.h}, {self.w}, {self.dim})"
        return f"(B, {self.n}, {self.dim})"

    def tokens(self) -> str:
        """Human description for tables: ``1 + 196`` or ``14x14``."""
        if self.layout != "seq":
            return f"{self.h}x{self.w}"
        if not self.patches:
            return str(self.prefix)  # prefix tokens only (after layer-wise class attention)
        return f"{self.prefix} + {self.patches}" if self.prefix else str(self.patches)

    def with_(self, **changes: Any) -> Tokens:
        return replace(self, **changes)


@dataclass(frozen=True)
class Model:
    """Model-wide facts every part may read (fixed by the spec, not by the step)."""

    in_chans: int
    num_classes: int
    norm_eps: float
    token_sizes: tuple[tuple[str, int], ...]  # prefix-token groups of the spec and their token counts
    total_depth: int  # blocks that take a stochastic-depth rate
    schedule: str = "linear"  # how the rates run over them: linear from 0, or uniform

    def size(self, group: str) -> int:
        return dict(self.token_sizes)[group]


@dataclass(frozen=True)
class Row:
    """One line of the stage table in a generated docstring and in ``archgen count``."""

    kind: str
    depth: str = "-"
    heads: str = "-"


class Strict(BaseModel):
    # NaN and infinity are never a spec's meaning, and `nan` written into generated code does not import
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads `true`, `yes` and `on` as booleans, and pydantic would take them as 1: a number field
        (or a list of numbers) refuses them."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _numeric(field.annotation):
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, bool) for v in items):
                raise ValueError("a number, not true or false")
        return value


def _numeric(annotation: Any) -> bool:
    """Whether ``annotation`` is a number, an optional one or a tuple of them (and never a bool)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _numeric(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple):
        kinds = [a for a in args if a not in (type(None), Ellipsis)]
        return bool(kinds) and all(_numeric(a) for a in kinds)
    return annotation in (int, float)


class Part(Strict):
    """Base of every part. Subclasses set ``kind: Literal[...]`` and ``slot``."""

    slot: ClassVar[str]
    also: ClassVar[tuple[str, ...]] = ()  # further slots it fills (a conv embedding: the stem and a stage step)
    # the part's class defines `init_weights()`, its reference's initialisation, which the model runs after
    # its generic one (trunc_normal linears); may be a property where it depends on the part's options
    own_init: ClassVar[bool] = False

    @classmethod
    def template(cls) -> str:
        """The template beside the part's module: ``archgen/mixers/mhsa.py`` -> ``mixers/mhsa.j2``."""
        module = Path(sys.modules[cls.__module__].__file__ or "")
        return f"{module.parent.name}/{module.stem}.j2"

    @classmethod
    def tag(cls) -> str:
        return cls.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]

    def helpers(self) -> tuple[Part, ...]:
        """Parts whose classes this part's classes use (rendered first)."""
        return ()


class Step(Part):
    """A part that is a step of ``forward_features``: stem, position table, stage, or a step the
    compiler adds itself (prefix tokens joining, a change of token layout)."""

    @property
    def label(self) -> str:
        """What tables call the step (its kind)."""
        return self.kind  # type: ignore[attr-defined, no-any-return]

    def needs(self, s: Tokens) -> str | None:
        """The token layout this step needs (``grid`` or ``seq``); the compiler converts to it."""
        return None

    def grid_stride(self) -> int:
        """How many times smaller this step makes the patch grid's side (a downsample's stride)."""
        return 1

    @property
    def size_free(self) -> bool:
        """Whether the step works at any input size unchanged (no position table, no size-bound weights or
        masks); a model all of whose steps are takes any input without dynamic_img_size (timm's
        ``fixed_input_size`` False)."""
        return False

    def grid_offset(self) -> int:
        """What the step adds to the grid's side before dividing by its stride (a padded conv's
        ``2 * padding - kernel + stride``)."""
        return 0

    def grid_ceil(self) -> bool:
        """Whether the downsample rounds the grid's side up (it pads an odd side) rather than down."""
        return False

    def out(self, s: Tokens, m: Model) -> Tokens:
        """The state after this step; raise ``KindError`` for hyper-parameters that do not fit."""
        raise NotImplementedError

    def count(self, s: Tokens, m: Model) -> Count:
        raise NotImplementedError

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        """Trace the step's forward on ``x`` (what it receives) and return its output: the same ops, views
        and copies as its template, so the tape sees what autograd saves."""
        raise NotImplementedError

    def row(self, s: Tokens, m: Model) -> Row | None:
        """A stage-table row, or None for steps too small to list (a norm, a reshape)."""
        return None

    def num_blocks(self) -> int:
        """How many residual blocks take a stochastic-depth rate."""
        return 0

    def no_weight_decay(self) -> tuple[str, ...]:
        return ()

    def trunc_normal(self) -> tuple[str, ...]:
        """Model-level parameters initialised with trunc_normal(std=0.02) (learned tokens and tables)."""
        return self.no_weight_decay()


@dataclass(frozen=True)
class OpCtx:
    """What an op sees inside one block: the widths it is built with and the tokens it reads."""

    dim: int
    heads: int
    hidden: int
    s: Tokens  # what the op reads: a grid for grid ops, the class token alone for token-wise ops in a cls stage


class Op(Part):
    """A token mixer or feed-forward: the ``op`` of a residual branch. Any op works in any block where
    the token layout fits; the block decides how the tokens reach it (``reads``).

    The class constants below are read through the instance: an op whose properties depend on its options
    overrides one with a ``@property`` (an attention with rotary embedding reads the patch grid, say)."""

    slot = "op"
    attr: ClassVar[str]  # default attribute name in the block: attn, mlp, leff
    # seq: all tokens (B, N, C); grid: the patch tokens as a grid (B, H, W, C), prefix tokens pass through
    # unchanged; token: each token on its own, in any layout
    reads: ClassVar[str] = "seq"
    writes_first: ClassVar[bool] = False  # returns the first token only (class attention)
    # constructor arguments among dim, num_heads, hidden and the dropout rates attn_drop, proj_drop
    args: ClassVar[tuple[str, ...]] = ("dim",)
    class_name: ClassVar[str]
    label: ClassVar[str] = ""  # names a block class that uses this op (``ReAttention`` -> ReAttentionBlock)
    # A flat op has no class of its own: its modules sit directly on the block and its forward is inlined in
    # the block's (timm's ParallelScalingBlock). Its template's ``init(k, m)`` macro writes the constructor
    # lines, ``forward(k, normed)`` the forward's, leaving the output in ``y``; ``modules`` names the modules
    # and parameters it sets on the block, ``attributes`` its plain attributes (both checked for clashes).
    flat: ClassVar[bool] = False
    # set_input_size rescales its window with the patch grid (its class's `set_window(grid, window)` and
    # `target`, the window asked for), as timm's Swin does
    rewindows: ClassVar[bool] = False
    # options the op's class takes as constructor arguments (named as the field, after `args`), so ops that differ
    # only there share one class; its block passes them on from its own constructor (PVT-v2's `sr_ratio`)
    runtime: ClassVar[tuple[str, ...]] = ()
    modules: ClassVar[tuple[str, ...]] = ()
    attributes: ClassVar[tuple[str, ...]] = ()

    key: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=40), AfterValidator(check_op_key)] | None = (
        Field(
            default=None, description="Attribute name in the block (default: the op's usual name, e.g. `attn`, `mlp`)."
        )
    )

    # the op works at any grid size unchanged (see Step.size_free)
    size_free: ClassVar[bool] = False

    @property
    def fixed_grid(self) -> str | None:
        """Why the op runs only on the grid it was built for (the model then refuses dynamic_img_size and
        set_input_size), or None."""
        return None

    @property
    def fixed_resize(self) -> str | None:
        """Why set_input_size cannot rebuild the op as its reference does (inputs of other sizes may still run under
        dynamic_img_size), or None."""
        return self.fixed_grid

    @property
    def takes_rope(self) -> bool:
        """Whether the op's forward takes the model's rotary table as a second argument (``op(x, rope)``)."""
        return False

    def no_weight_decay(self) -> tuple[str, ...]:
        """Its parameters that take no weight decay (a position encoding's), relative to the op's module."""
        return ()

    def check(self, c: OpCtx) -> None:
        """Raise ``KindError`` when the op cannot work on these tokens."""

    def count(self, c: OpCtx) -> Count:
        raise NotImplementedError

    def memory(self, tape: Tape, x: T, c: OpCtx) -> T:
        """Trace the op's forward on ``x`` (the normed input, in the layout it ``reads``); return its output."""
        raise NotImplementedError

    def identity(self) -> str:
        """Everything that shapes the op's class (its attribute name and its runtime options do not)."""
        return repr(sorted(self.model_dump(exclude={"key", *self.runtime}).items()))
