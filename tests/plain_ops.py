"""Plain re-derivations of the primitive ops, written from their definitions (no nn modules), shared by
the tests that check generated blocks against the papers' equations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def batch_norm(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, eps: float = 1e-5) -> torch.Tensor:
    """Eval BatchNorm over the channel axis 1 of (B, C, ...), from the state_dict entries under ``p``."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = sd[f"{p}.running_mean"].view(shape), sd[f"{p}.running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + eps) * sd[f"{p}.weight"].view(shape) + sd[f"{p}.bias"].view(shape)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def conv(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """Dense conv as patches x weights: unfold, then one einsum (no bias)."""
    b, _, h, wd = x.shape
    k = w.shape[-1]
    cols = F.unfold(x, k, padding=pad, stride=stride)  # (B, C*k*k, L)
    out_h, out_w = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    return torch.einsum("bkl,ok->bol", cols, w.flatten(1)).reshape(b, -1, out_h, out_w)
