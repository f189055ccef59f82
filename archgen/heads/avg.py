"""Global average pooling over the patch tokens, then a linear classifier (timm's ``global_pool='avg'``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import Model, Row, Tokens
from archgen.errors import KindError
from archgen.heads.head import Head
from archgen.memory import T, Tape
from archgen.norms import Norm


class AvgPoolHead(Head):
    """``head`` = Linear(dim, num_classes) on the mean of the patch tokens (prefix tokens, e.g. registers,
    are left out). timm's ``fc_norm`` rule: by default the spec's final norm moves after the pooling and is
    stored as ``fc_norm``; ``fc_norm: false`` keeps it on every token, before the pooling."""

    pool = "avg"  # timm's default global_pool

    kind: Literal["avg"] = Field(description="Average of the patch tokens, then `head` (timm `global_pool='avg'`).")
    fc_norm: bool = Field(
        default=True, description="Apply the final norm after pooling, as `fc_norm` (timm's default for avg)."
    )

    layout: Literal["seq", "grid", "image"] = Field(
        default="seq",
        description="What forward_features returns and the pooling averages: the token sequence (B, N, C), the "
        "patch grid (B, H, W, C: timm's Swin) or a feature map (B, C, H, W: timm's PVT-v2).",
    )
    classifier: Literal["head", "head.fc"] = Field(
        default="head",
        description="Key of the classifier: `head`, or `head.fc` inside a `head` module (timm's ClassifierHead, "
        "as Swin stores it).",
    )

    def classifiers(self) -> tuple[str, ...]:
        return (self.classifier,)

    def needs(self) -> str:
        return self.layout

    def takes_norm(self) -> bool:
        return self.fc_norm

    def check(self, s: Tokens, m: Model) -> None:
        if not s.patches:
            raise KindError("kind", "average pooling needs patch tokens")

    def inputs(self, tape: Tape, x: T, s: Tokens, fc_norm: Norm | None) -> dict[str, T]:
        if self.layout == "seq":
            pooled = tape.mean(x[:, s.prefix :], dim=1)
        else:  # the mean over both grid axes: a new (B, C) tensor, nothing saved
            pooled = tape.mean(
                x.flatten(1, 2) if self.layout == "grid" else x.flatten(2), 1 if self.layout == "grid" else 2
            )
        return {"head": fc_norm.memory(tape, pooled) if fc_norm else pooled}

    def row(self, s: Tokens, m: Model) -> Row:
        return Row("linear on the mean of the patches" + (", fc_norm" if self.fc_norm else ""))
