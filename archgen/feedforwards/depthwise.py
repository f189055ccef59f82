"""The kernel side of a depthwise conv inside a feed-forward (CeiT's LeFF, PVT-v2's MLP): odd, so that the
conv, padded by half its side, keeps the grid's size."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("the depthwise kernel must be odd to keep the grid size")
    return value


DepthwiseKernel = Annotated[
    int, Field(ge=1, le=15, description="Side of the depthwise conv (odd)."), AfterValidator(_odd)
]
