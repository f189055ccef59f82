"""What every position table shares: where it is added and which tokens it covers.

Not a part itself: the tables in this folder subclass it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, StageKey, Step, Tokens
from archgen.errors import KindError
from archgen.memory import T, Tape

Covers = Literal["all", "patches", "cls"]
COVERS_DOC = (
    "Which tokens have rows: `all` (every prefix token and the patches, ViT/DeiT), `patches` (DeiT III, "
    "CaiT; prefix tokens join after it) or `cls` (the class token and the patches; other prefix tokens, "
    "e.g. registers, join after it, as in DINOv2)."
)


class PositionTable(Step):
    """A table added to the tokens once, right after the stem or right before the stage named ``before``."""

    slot = "pos_embed"

    before: StageKey | None = Field(
        default=None, description="Key of the stage it is added before (default: right after the stem)."
    )

    def joins_first(self, groups: tuple[str, ...]) -> tuple[str, ...]:
        """Of the prefix-token groups joining after the stem, those that join before the table."""
        return ()

    def needs(self, s: Tokens) -> str | None:
        return "seq"

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        return tape.pointwise(x, tape.param)  # x + table: nothing saved (the table is a parameter or a buffer)


class SequenceTable(PositionTable):
    """A (1, N, C) table over the token sequence; ``covers`` says which tokens have rows."""

    covers: Covers = Field(default="all", description=COVERS_DOC)

    def joins_first(self, groups: tuple[str, ...]) -> tuple[str, ...]:
        if self.covers == "all":
            return groups
        return ("cls",) if self.covers == "cls" and "cls" in groups else ()

    def out(self, s: Tokens, m: Model) -> Tokens:
        if self.covers == "patches" and s.prefix:
            raise KindError("covers", "a table over the patches alone is added before any prefix token joins")
        if self.covers == "cls" and s.groups != ("cls",):
            raise KindError("covers", "`cls` covers the class token, which must be the only prefix token in yet")
        return s

    def rows(self, s: Tokens, grid: str = "grid") -> str:
        """The table's length as generated code of the patch grid (h, w) named ``grid``: ``1 + grid[0] * grid[1]``."""
        patches = f"{grid}[0] * {grid}[1]"
        return f"{s.prefix} + {patches}" if s.prefix else patches
