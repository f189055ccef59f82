"""Learned 2-D position embedding ``(1, H, W, C)``, added to the patch tokens before a chosen stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.counting import Count, parameter
from archgen.errors import KindError
from archgen.kinds.base import Model, StageKey, Step, Tokens


class LearnedPosEmbed2d(Step):
    """One learned vector per grid cell (no prefix-token slots), stored as ``pos_embed`` (1, H, W, C).

    ``before`` names the stage it is added in front of (VOLO: after the downsample, ``network.2``);
    without it the table is added right after the stem. On a sequence it is added flattened.
    """

    slot = "pos_embed"
    template = "pos_embed_2d.j2"
    imports = ("import torch.nn.functional as F",)

    kind: Literal["learned_2d"] = Field(description="Learned 2-D table `pos_embed` of shape (1, H, W, dim).")
    before: StageKey | None = Field(
        default=None, description="Key of the stage it is added before (default: right after the stem)."
    )

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout == "image" or s.prefix:
            raise KindError("kind", "a 2-D position table is added to patch tokens, before any prefix token")
        return s

    def count(self, s: Tokens, m: Model) -> Count:
        return parameter("pos_embed", s.h * s.w * s.dim)

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("pos_embed",)
