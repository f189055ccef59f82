"""Two-layer MLP with GELU: the feed-forward half of a transformer block."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, linear
from archgen.kinds.base import Kind


class Mlp(Kind):
    """``fc1`` (dim -> hidden), GELU, ``fc2`` (hidden -> dim), applied to every token."""

    slot = "mlp"
    template = "mlp.j2"

    kind: Literal["mlp"] = Field(description="Token-wise MLP (timm `mlp.fc1`, `mlp.fc2`).")

    class_name: ClassVar[str] = "Mlp"

    def count(self, dim: int, hidden: int, tokens: int) -> Count:
        return Count.group("mlp", [linear("fc1", dim, hidden, tokens), linear("fc2", hidden, dim, tokens)])
