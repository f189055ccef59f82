"""Stochastic depth: drops a residual branch for a random subset of samples while training."""

from __future__ import annotations

from typing import Literal

from archgen.base import Part


class DropPath(Part):
    """No parameters, no MACs. Not written in specs: block stages with ``stochastic_depth`` use it."""

    slot = "helper"

    kind: Literal["drop_path"] = "drop_path"
