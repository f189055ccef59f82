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
    """(B, H * W, C) <-> (B, H, W, C), or either as a feature map (B, C, H, W); a view, no parameters, no MACs."""

    slot = "layout"

    kind: Literal["reshape"] = "reshape"
    to: Literal["grid", "seq", "image"]

    @property
    def size_free(self) -> bool:
        return True

    def out(self, s: Tokens, m: Model) -> Tokens:
        if self.to == "seq":
            return s.with_(layout="seq")
        if s.prefix:
            why = "cannot enter the token grid this step needs; let a later stage join them (`joins:`)"
            raise KindError("kind", f"prefix tokens ({', '.join(s.groups)}) {why}")
        if self.to == "image":
            return s.with_(layout="image")
        return s.with_(layout="grid")

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("", [])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        if self.to == "image":  # channels first, a view
            return x.permute(0, 3, 1, 2) if s.layout == "grid" else x.transpose(1, 2).unflatten(2, (s.h, s.w))
        return x.unflatten(1, (s.h, s.w)) if self.to == "grid" else x.flatten(1, 2)
