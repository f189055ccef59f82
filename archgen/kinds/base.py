"""What every block kind shares: the token state it transforms and the interface it implements.

A kind is a pydantic model (its schema, ``extra="forbid"``) that also knows how to transform the
token state, count itself, and which Jinja template beside its module renders it. The compiler core
only calls the methods below; it never looks at a kind's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from archgen.counting import Count

StageKey = Annotated[
    str,
    Field(
        pattern=r"^[a-z_][a-z0-9_]*(\.[0-9]+)?$",
        max_length=40,
        description="Attribute path and state_dict prefix: `blocks`, or `network.2` (a ModuleList entry).",
    ),
]


@dataclass(frozen=True)
class Tokens:
    """The activation between steps: an image, a token grid or a token sequence.

    ``layout`` is ``image`` (B, C, H, W), ``grid`` (B, H, W, C) or ``seq`` (B, N, C) where
    N = prefix + h * w (prefix = class/distillation tokens currently in the sequence).
    """

    dim: int
    h: int
    w: int
    prefix: int = 0
    layout: str = "seq"

    @property
    def n(self) -> int:
        return self.prefix + self.h * self.w

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
        if not self.h * self.w:
            return str(self.prefix)  # prefix tokens only (CeiT's layer-wise class tokens)
        return f"{self.prefix} + {self.h * self.w}" if self.prefix else str(self.h * self.w)

    def with_(self, **changes: Any) -> Tokens:
        return replace(self, **changes)


@dataclass(frozen=True)
class Model:
    """Model-wide facts every kind may read (fixed by the spec, not by the step)."""

    in_chans: int
    num_classes: int
    norm_eps: float
    prefix_tokens: tuple[str, ...]
    total_depth: int  # blocks that take a stochastic-depth rate


@dataclass(frozen=True)
class Row:
    """One line of the stage table in a generated docstring and in ``archgen count``."""

    kind: str
    depth: str = "-"
    heads: str = "-"


class Kind(BaseModel):
    """Base of every kind. Subclasses set ``kind: Literal[...]`` and ``slot``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot: ClassVar[str]
    template: ClassVar[str]
    imports: ClassVar[tuple[str, ...]] = ()

    def children(self) -> tuple[Kind, ...]:
        """Kinds whose classes this kind's classes use (rendered first)."""
        return ()


class Step(Kind):
    """A kind that is a step of ``forward_features`` (stem, stage, token or embedding step)."""

    # A stage that concatenates the prefix tokens itself (CaiT's class attention) sets this; the
    # compiler then creates the token parameters but does not concatenate them after the stem.
    joins_prefix_tokens: ClassVar[bool] = False

    def out(self, s: Tokens, m: Model) -> Tokens:
        """The state after this step; raise ``KindError`` for hyper-parameters that do not fit."""
        raise NotImplementedError

    def count(self, s: Tokens, m: Model) -> Count:
        raise NotImplementedError

    def row(self, s: Tokens, m: Model) -> Row | None:
        """A stage-table row, or None for steps too small to list (a norm)."""
        return None

    def num_blocks(self) -> int:
        """How many residual blocks take a stochastic-depth rate."""
        return 0

    def no_weight_decay(self) -> tuple[str, ...]:
        return ()
