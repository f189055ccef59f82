"""Exact parameter and MAC counts as a tree whose names are the generated module's attribute paths.

MAC convention: one per multiply-add of convolutions, linear layers and attention matmuls; biases,
norms, activations and softmax cost nothing. This equals ``FlopCounterMode`` total / 2 and timm's
``infer_gmacs``. No torch here: ``archgen count`` must answer without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Count:
    name: str
    params: int = 0
    macs: int = 0
    children: tuple[Count, ...] = ()

    @staticmethod
    def group(name: str, children: list[Count] | tuple[Count, ...]) -> Count:
        kids = tuple(children)
        return Count(name, sum(c.params for c in kids), sum(c.macs for c in kids), kids)

    def repeat(self, names: list[str]) -> list[Count]:
        """The same count under several names (``blocks.0`` … ``blocks.11``)."""
        return [Count(n, self.params, self.macs, self.children) for n in names]

    def walk(self, prefix: str = "") -> list[tuple[str, Count]]:
        """Every node with its full dotted path, parents before children."""
        path = f"{prefix}.{self.name}" if prefix and self.name else (self.name or prefix)
        rows = [(path, self)]
        for child in self.children:
            rows.extend(child.walk(path))
        return rows


def linear(name: str, fan_in: int, fan_out: int, tokens: int, bias: bool = True) -> Count:
    return Count(name, fan_in * fan_out + (fan_out if bias else 0), tokens * fan_in * fan_out)


def conv2d(
    name: str, c_in: int, c_out: int, kernel: int, out_hw: tuple[int, int], bias: bool = True, groups: int = 1
) -> Count:
    weights = c_out * (c_in // groups) * kernel * kernel
    return Count(name, weights + (c_out if bias else 0), out_hw[0] * out_hw[1] * weights)


def norm(name: str, dim: int) -> Count:
    """LayerNorm or BatchNorm with affine weight and bias (running stats are buffers)."""
    return Count(name, 2 * dim, 0)


def parameter(name: str, numel: int) -> Count:
    return Count(name, numel, 0)
