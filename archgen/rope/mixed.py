"""RoPE-Mixed (Heo et al., Rotary Position Embedding for Vision Transformer, 2024): learned 2-D frequencies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Tokens
from archgen.counting import Count, parameter
from archgen.memory import FLOAT32, T, Tape
from archgen.rope.table import INDEXING_DOC, RotaryTable


class MixedRope(RotaryTable):
    """Each block and head learns its own frequencies: channel pair i turns by x * fx_i + y * fy_i for the
    patch at column x, row y (timm's RotaryEmbeddingMixed, ``rope.freqs`` of shape (2, blocks, heads,
    head_dim / 2)). Block j of the blocks that use it (in model order) gets table j. Computed in float32 at
    every forward (the frequencies are parameters); the default grid's coordinates are a buffer."""

    own_init = True

    kind: Literal["mixed"] = Field(description="Learned 2-D rotary frequencies per block and head (RoPE-Mixed).")
    temperature: float = Field(
        default=10.0, gt=1, le=1e9, description="Base of the initial frequency magnitudes (RoPE-Mixed: 10)."
    )
    indexing: Literal["ij", "xy"] = Field(default="xy", description=INDEXING_DOC)

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("rope", [parameter("freqs", self.depth * self.heads * self.head_dim)])

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("rope.freqs",)

    def trunc_normal(self) -> tuple[str, ...]:
        return ()  # initialised by its own init_weights

    def table(self, tape: Tape, s: Tokens) -> T:
        pos = tape.buffer((2, s.patches)).to(FLOAT32)  # coordinates in float32 (a copy in a lower-precision model)
        tape.save(pos)  # x * fx + y * fy: the frequencies' gradient needs the coordinates
        angles = T.empty((self.depth, self.heads, s.patches, self.head_dim // 2), FLOAT32)
        return tape.rope_table(angles).to(tape.itemsize)[0]  # each block a view of the one table
