"""What both rotary tables share: computed once per forward from the patch grid, handed to every block whose
attention rotates its queries and keys with it (``mhsa`` with ``rope: true``).

Not a part itself: the tables in this folder subclass it. The spec writes the table at the top level
(``rope:``); the compiler places it right before the first stage that uses it and tells it the head layout of
the attentions that do (``resolved``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr

from archgen.base import Model, Step, Tokens
from archgen.errors import KindError
from archgen.memory import T, Tape

INDEXING_DOC = (
    "Which grid axis turns the first half of each head's channel pairs: `ij` the row (EVA-02, timm's "
    "default), `xy` the column (RoPE-ViT)."
)


class RotaryTable(Step):
    """A (…, patches, 2 * head_dim) table of sines then cosines, one angle per channel pair (written twice, as
    timm's interleaved layout has it); prefix tokens have no rows and keep their queries and keys."""

    slot = "rope"

    indexing: Literal["ij", "xy"] = Field(default="ij", description=INDEXING_DOC)

    # the attentions that use the table, as the compiler found them (resolved)
    _head_dim: int = PrivateAttr(default=0)
    _heads: int = PrivateAttr(default=0)
    _depth: int = PrivateAttr(default=0)

    def resolved(self, head_dim: int, heads: int, depth: int) -> RotaryTable:
        """A copy told the head width and count of the attentions using it and how many blocks hold one."""
        out = self.model_copy()
        out._head_dim, out._heads, out._depth = head_dim, heads, depth
        return out

    @property
    def head_dim(self) -> int:
        return self._head_dim

    @property
    def heads(self) -> int:
        return self._heads

    @property
    def depth(self) -> int:
        """Blocks whose attention uses the table."""
        return self._depth

    def needs(self, s: Tokens) -> str | None:
        return None

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout == "image":
            raise KindError("kind", "a rotary table needs the patch grid; a stem makes it")
        if self._head_dim % 4:
            raise KindError("kind", f"a 2-D rotary table needs a head width divisible by 4, not {self._head_dim}")
        return s

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        tape.rope = self.table(tape, s)
        return x

    def table(self, tape: Tape, s: Tokens) -> T:
        """Trace the table's computation; return what one block receives."""
        raise NotImplementedError
