"""Learned 1-D position embedding added to the token sequence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, parameter
from archgen.kinds.base import Model, Step, Tokens


class LearnedPosEmbed(Step):
    """One learned vector per token position, added once after the stem.

    ``covers: all`` (ViT, DeiT) includes the prefix-token slots, so it is added after they are
    concatenated; ``covers: patches`` (CaiT) holds patch positions only and is added before.
    """

    slot = "pos_embed"
    template = "pos_embed.j2"
    imports = ("import math", "import torch.nn.functional as F")

    kind: Literal["learned"] = Field(description="Learned 1-D table `pos_embed` of shape (1, N, dim).")
    covers: Literal["all", "patches"] = Field(description="Whether the table has slots for prefix tokens.")

    @property
    def covers_prefix(self) -> bool:
        return self.covers == "all"

    def out(self, s: Tokens, m: Model) -> Tokens:
        return s

    def count(self, s: Tokens, m: Model) -> Count:
        return parameter("pos_embed", s.n * s.dim)

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("pos_embed",)
