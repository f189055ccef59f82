"""A change of token layout between steps: the patch sequence as its grid, or the grid as a sequence.

The compiler adds it wherever the next step needs the other layout (an outlooker after a patch
embedding, a downsample after a sequence stage, a sequence stage after a downsample).
"""

from __future__ import annotations

from typing import Literal

from archgen.base import Model, Step, Tokens
from archgen.counting import Count
from archgen.errors import KindError
from archgen.memory import T, Tape


class Reshape(Step):
    """(B, H * W, C) <-> (B, H, W, C); a view, no parameters, no MACs."""

    slot = "layout"

    kind: Literal["reshape"] = "reshape"
    to: Literal["grid", "seq"]

    def out(self, s: Tokens, m: Model) -> Tokens:
        if self.to == "seq":
            return s.with_(layout="seq")
        if s.prefix:
            why = "cannot enter the token grid this step needs; let a later stage join them (`joins:`)"
            raise KindError("kind", f"prefix tokens ({', '.join(s.groups)}) {why}")
        return s.with_(layout="grid")

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("", [])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        return x.unflatten(1, (s.h, s.w)) if self.to == "grid" else x.flatten(1, 2)
