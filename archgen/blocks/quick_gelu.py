"""CLIP's activation, x * sigmoid(1.702 x): a class of the generated file wherever an op uses `quick_gelu`."""

from __future__ import annotations

from typing import Literal

from archgen.base import Part


class QuickGELU(Part):
    """No parameters, no MACs. Not written in specs: an op with ``act: quick_gelu`` uses it."""

    slot = "helper"

    kind: Literal["quick_gelu"] = "quick_gelu"
