"""CeiT's locally-enhanced feed-forward: the MLP as 1x1 convs around a depthwise conv on the token grid."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from archgen.counting import Count, conv2d, norm
from archgen.kinds.base import Kind


class LeFF(Kind):
    """1x1 expand + BN + GELU, depthwise k x k + BN + GELU, 1x1 reduce + BN (no activation after it).

    Works on the patch tokens put back on their square grid; the class token bypasses it (it leaves
    unchanged, i.e. as the block's *normalised* token, which the residual then adds).
    """

    slot = "leff"
    template = "leff.j2"

    kind: Literal["leff"] = Field(description="Locally-enhanced feed-forward (official `leff`).")
    kernel_size: int = Field(default=3, ge=1, le=15, description="Side of the depthwise conv (odd).")

    class_name: ClassVar[str] = "LeFF"

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("the depthwise kernel must be odd to keep the grid size")
        return value

    def count(self, dim: int, hidden: int, patches: int) -> Count:
        """``patches`` = the grid's positions (the class token is not convolved)."""
        at = (patches, 1)
        return Count.group(
            "leff",
            [
                conv2d("conv1", dim, hidden, 1, at),
                conv2d("conv2", hidden, hidden, self.kernel_size, at, groups=hidden),
                conv2d("conv3", hidden, dim, 1, at),
                norm("bn1", hidden, patches * hidden, per_element=2),
                norm("bn2", hidden, patches * hidden, per_element=2),
                norm("bn3", dim, patches * dim, per_element=2),
            ],
        )
