"""Stochastic depth, shared by every residual block kind (no parameters, no MACs)."""

from __future__ import annotations

from typing import Literal

from archgen.kinds.base import Kind


class DropPath(Kind):
    """Not written in specs: block kinds list it among their children."""

    slot = "helper"
    template = "drop_path.j2"

    kind: Literal["drop_path"] = "drop_path"
