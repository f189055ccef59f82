"""Exact parameter and MAC counts as a tree whose names are the generated module's attribute paths.

MAC convention: one per multiply-add of convolutions, linear layers and attention matmuls; biases,
norms, activations and softmax cost nothing. This equals ``FlopCounterMode`` total / 2.

A second convention, ``fvcore`` (what timm's ``infer_gmacs`` column and several papers report), adds
fvcore's norm handles: LayerNorm 5 and eval BatchNorm 2 per element (affine). ``norm_extra`` holds
that difference so both conventions come from one count. No torch here: ``archgen count`` must
answer without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Count:
    name: str
    params: int = 0
    macs: int = 0
    children: tuple[Count, ...] = ()
    norm_extra: int = 0  # fvcore's norm terms; not MACs
    op: str = ""  # leaves: linear, conv, matmul, norm, parameter (for ``archgen count --by op``)
    tensors: int = 0  # parameter tensors (an optimizer keeps per-tensor state, e.g. AdamW's step)
    frozen: int = 0  # parameters that take no gradient (a fixed table stored as a parameter)

    @staticmethod
    def group(name: str, children: list[Count] | tuple[Count, ...]) -> Count:
        kids = tuple(children)
        return Count(
            name,
            sum(c.params for c in kids),
            sum(c.macs for c in kids),
            kids,
            sum(c.norm_extra for c in kids),
            tensors=sum(c.tensors for c in kids),
            frozen=sum(c.frozen for c in kids),
        )

    def renamed(self, name: str) -> Count:
        return replace(self, name=name)

    @property
    def trainable(self) -> int:
        return self.params - self.frozen

    @property
    def fvcore(self) -> int:
        return self.macs + self.norm_extra

    def in_convention(self, convention: str) -> int:
        """``macs`` (default), ``flops`` (2 x MACs) or ``fvcore`` (MACs + fvcore's norm terms)."""
        return {"macs": self.macs, "flops": 2 * self.macs, "fvcore": self.fvcore}[convention]

    def repeat(self, names: list[str]) -> list[Count]:
        """The same count under several names (``blocks.0`` … ``blocks.11``)."""
        return [self.renamed(n) for n in names]

    def by_op(self) -> dict[str, Count]:
        """Leaves summed by operation type."""
        out: dict[str, Count] = {}
        for _path, node in self.walk():
            if node.children:
                continue
            op = node.op or "other"
            prev = out.get(op, Count(op, op=op))
            out[op] = replace(Count.group(op, [prev, node]), children=(), op=op)
        return dict(sorted(out.items()))

    def walk(self, prefix: str = "") -> list[tuple[str, Count]]:
        """Every node with its full dotted path, parents before children."""
        path = f"{prefix}.{self.name}" if prefix and self.name else (self.name or prefix)
        rows = [(path, self)]
        for child in self.children:
            rows.extend(child.walk(path))
        return rows


def linear(name: str, fan_in: int, fan_out: int, tokens: int, bias: bool = True) -> Count:
    params = fan_in * fan_out + (fan_out if bias else 0)
    return Count(name, params, tokens * fan_in * fan_out, op="linear", tensors=2 if bias else 1)


def conv2d(
    name: str, c_in: int, c_out: int, kernel: int, out_hw: tuple[int, int], bias: bool = True, groups: int = 1
) -> Count:
    weights = c_out * (c_in // groups) * kernel * kernel
    params = weights + (c_out if bias else 0)
    return Count(name, params, out_hw[0] * out_hw[1] * weights, op="conv", tensors=2 if bias else 1)


def norm(name: str, dim: int, elements: int, per_element: int = 5) -> Count:
    """An affine LayerNorm (fvcore: 5 per element) or BatchNorm (``per_element=2``) over ``elements``.

    Running statistics are buffers, not parameters.
    """
    return Count(name, 2 * dim, 0, (), per_element * elements, "norm", tensors=2)


def parameter(name: str, numel: int, frozen: bool = False) -> Count:
    return Count(name, numel, 0, op="parameter", tensors=0 if frozen else 1, frozen=numel if frozen else 0)


def matmul(name: str, macs: int) -> Count:
    """Activation-by-activation products (q @ k^T, attn @ v): MACs, no parameters."""
    return Count(name, 0, macs, op="matmul")
