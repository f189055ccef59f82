"""Every rule of the memory tracer on its own against torch.

Each public ``Tape`` method is run next to a small torch snippet doing the same op on inputs that require
grad; the bytes of the distinct storages autograd saves (``saved_tensors_hooks``, parameters and buffers
excluded) must equal what the tape counts, and the op's output must have the shape, strides and element
size the tape gives it (a later ``reshape`` decides between a view and a copy by them). Each rule runs in
every precision it can (a float32, bfloat16 or float16 module; CPU autocast to bf16 or fp16 around a float32
module, with a float32 input or with one already in the autocast dtype, as a lower-precision op's output is)
and with each of its options and input layouts that matter. ``test_every_public_method_has_a_rule_test``
fails when a new method has none.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archgen.memory import ACTIVATIONS, AMP, ITEMSIZE, NORMS, T, Tape

TESTED: set[str] = set()


def rule(*methods: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Marks a test as the torch check of these ``Tape`` methods."""

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        TESTED.update(methods)
        return test

    return mark


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: torch.dtype  # the module's
    amp: str | None  # the torch.autocast dtype around it
    input: torch.dtype  # the activations the op receives

    def tape(self) -> Tape:
        itemsize = ITEMSIZE[str(self.dtype).removeprefix("torch.")]
        return Tape(itemsize, autocast=ITEMSIZE[AMP[self.amp]] if self.amp else None)

    @property
    def autocast(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp] if self.amp else None


F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
PRECISIONS = [
    Precision("float32", F32, None, F32),
    Precision("bfloat16", BF16, None, BF16),
    Precision("float16", F16, None, F16),
    Precision("amp_bf16", F32, "bf16", F32),
    Precision("amp_bf16-bf16_input", F32, "bf16", BF16),
    Precision("amp_fp16", F32, "fp16", F32),
    Precision("amp_fp16-fp16_input", F32, "fp16", F16),
]
MODULE_DTYPES = [p for p in PRECISIONS if p.amp is None]  # ops whose inputs always have the module's dtype
FLOAT32_INPUT = [p for p in PRECISIONS if p.input == p.dtype]  # ... and autocast, fed float32 as models do
each_precision = pytest.mark.parametrize("p", PRECISIONS, ids=lambda p: p.name)

# A layout is applied to a fresh activation of the given shape, in torch and on the tape alike.
Layout = Callable[[object], object]


def contiguous(t):
    return t


def transposed(t):
    return t.transpose(-2, -1)


def sliced(t):
    return t[:, 1:]


def activation(p: Precision, tape: Tape, shape: Sequence[int], layout: Layout = contiguous, dtype=None):
    """An activation that requires grad (a non-leaf, as every activation is) and its symbolic twin: a
    fresh tensor of ``shape`` seen through ``layout`` (a transpose, a slice)."""
    dtype = dtype or p.input
    base = torch.randn(*shape, dtype=dtype, requires_grad=True)
    x = layout(base * 1)
    t = layout(T.empty(shape, ITEMSIZE[str(dtype).removeprefix("torch.")]))
    assert (tuple(x.shape), x.stride()) == (t.shape, t.stride), "the layout acts alike on both"
    return x, t


@contextmanager
def recorded(p: Precision, *modules: nn.Module) -> Iterator[dict[int, int]]:
    """Records the distinct storages autograd saves in the block (the modules' parameters and buffers
    excluded), under the precision's autocast."""
    skip = {t.untyped_storage()._cdata for m in modules for t in [*m.parameters(), *m.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen.setdefault(storage._cdata, storage.nbytes())
        return t.detach()

    amp = torch.autocast("cpu", dtype=p.autocast, enabled=p.amp is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
        yield seen


def _strides(shape: Sequence[int], stride: Sequence[int]) -> tuple[int, ...]:
    """Strides of the dimensions with more than one element (the others' never matter)."""
    return tuple(s if n > 1 else 0 for n, s in zip(shape, stride, strict=True))


def assert_same(where: str, tape: Tape, seen: dict[int, int], ours: T | Sequence[T], theirs) -> None:
    """Bytes saved equal; each output of the same shape, layout and element size."""
    saved = sum(seen.values())
    assert tape.total == saved, f"{where}: tape counts {tape.total:,} bytes, autograd saved {saved:,}"
    ours = [ours] if isinstance(ours, T) else list(ours)
    theirs = [theirs] if isinstance(theirs, torch.Tensor) else list(theirs)
    assert len(ours) == len(theirs), where
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        assert o.shape == tuple(t.shape), f"{where}: output {i} shape {o.shape} != {tuple(t.shape)}"
        assert _strides(o.shape, o.stride) == _strides(t.shape, t.stride()), (
            f"{where}: output {i} strides {o.stride} != {t.stride()}"
        )
        assert o.itemsize == t.element_size(), f"{where}: output {i} element size {o.itemsize} != {t.element_size()}"


def check_op(
    where: str,
    p: Precision,
    shape: Sequence[int],
    theirs: Callable[[torch.Tensor], torch.Tensor],
    ours: Callable[[Tape, T], T],
    layout: Layout = contiguous,
    *modules: nn.Module,
) -> None:
    """One op of one activation (of ``shape`` through ``layout``) in torch and on the tape, compared."""
    tape = p.tape()
    x, t = activation(p, tape, shape, layout)
    with recorded(p, *modules) as seen:
        y = theirs(x)
    assert_same(f"{where} {p.name} {layout.__name__}", tape, seen, ours(tape, t), y)


def module(m: nn.Module, p: Precision) -> nn.Module:
    return m.to(p.dtype).train()


# --- the enumeration ----------------------------------------------------------------------------------

# Public members that are no op rule: the machinery that runs and sums the rules (whole models exercise it).
MACHINERY = {
    "save": "counts each storage once: every rule test checks it (views of one storage in the split test)",
    "unrecorded": "checkpointed blocks: tests/test_memory.py compares every spec with checkpointing on",
    "repeat": "identical blocks traced until their layout repeats: tests/test_memory.py, whole models",
}


def test_every_public_method_has_a_rule_test() -> None:
    public = {name for name in vars(Tape) if not name.startswith("_")}
    untested = public - TESTED - set(MACHINERY)
    assert not untested, f"Tape methods without a rule test against torch in {__file__}: {sorted(untested)}"
    assert public >= TESTED, f"rule tests of methods Tape no longer has: {sorted(TESTED - public)}"
    assert all(inspect.isfunction(vars(Tape)[name]) for name in MACHINERY), "MACHINERY names Tape's methods"


# --- linear layers and matmuls ---------------------------------------------------------------------------


@rule("linear", "low")
@each_precision
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("shape", "layout"),
    [((2, 5, 8), contiguous), ((2, 5, 8), sliced), ((2, 8, 5), transposed), ((6, 8), contiguous)],
    ids=["contiguous", "sliced", "transposed", "2d"],
)
def test_linear(p: Precision, bias: bool, shape: tuple[int, ...], layout: Layout) -> None:
    lin = module(nn.Linear(8, 6, bias=bias), p)
    check_op(
        f"linear bias={bias}",
        p,
        shape,
        lambda x: lin(x),
        lambda tape, t: tape.linear(t, 6, bias),
        layout,
        lin,
    )
    assert p.tape().low == torch.empty(0, dtype=p.autocast or p.dtype).element_size(), "the linear's dtype"


@rule("qkv")
@each_precision
def test_qkv(p: Precision) -> None:
    tape = p.tape()
    x, t = activation(p, tape, (2, 5, 12))
    lin = module(nn.Linear(12, 36), p)
    with recorded(p, lin) as seen:
        q, k, v = lin(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4).unbind(0)
    assert_same(f"qkv {p.name}", tape, seen, tape.qkv(t, 3), (q, k, v))


HEADS = {  # q, k, v of (B, heads, N, head_dim) ...
    "qkv_views": ((2, 5, 3, 3, 4), lambda x: x.permute(2, 0, 3, 1, 4)),  # of one fused qkv output (not dense)
    "contiguous": ((2, 3, 5, 4), contiguous),  # three of them
    "tokens_first": ((2, 5, 3, 4), lambda x: x.transpose(1, 2)),  # of separate (B, N, C) projections
    "head_dim_strided": ((2, 3, 4, 5), transposed),  # k^T-like: the last dimension not contiguous
}


def _heads(p: Precision, tape: Tape, layout: str):
    shape, view = HEADS[layout]
    if layout == "qkv_views":
        qkv, t = activation(p, tape, shape, view)
        return qkv.unbind(0), t.unbind(0)
    pairs = [activation(p, tape, shape, view) for _ in range(3)]
    return [x for x, _ in pairs], [t for _, t in pairs]


@rule("matmul")
@each_precision
@pytest.mark.parametrize("layout", HEADS)
def test_matmul(p: Precision, layout: str) -> None:
    tape = p.tape()
    (q, k, v), (tq, tk, tv) = _heads(p, tape, layout)
    with recorded(p) as seen:
        attn = q @ k.transpose(-2, -1)
        out = attn @ v
    ours = tape.matmul(tq, tk.transpose(-2, -1))
    assert_same(f"matmul {p.name} {layout}", tape, seen, (ours, tape.matmul(ours, tv)), (attn, out))


@rule("matmul")
@each_precision
def test_matmul_broadcasts_batch(p: Precision) -> None:
    """A (1, ...) operand is expanded to the batch and copied to 3-D for bmm."""
    tape = p.tape()
    a, ta = activation(p, tape, (2, 3, 5, 4))
    b, tb = activation(p, tape, (1, 3, 4, 6))
    with recorded(p) as seen:
        y = a @ b
    assert_same(f"matmul broadcast {p.name}", tape, seen, tape.matmul(ta, tb), y)


@rule("baddbmm")
@each_precision
def test_baddbmm(p: Precision) -> None:
    """Talking heads' mixing of heads: ``baddbmm(bias, weight.expand(B, H, H), attn.view(B, H, N * N))``."""
    mix = module(nn.Linear(3, 3), p)
    check_op(
        "baddbmm",
        p,
        (2, 3, 16),
        lambda x: torch.baddbmm(mix.bias.view(1, 3, 1), mix.weight.expand(2, 3, 3), x, alpha=0.5),
        lambda tape, t: tape.baddbmm(t),
        contiguous,
        mix,
    )


# --- attention -------------------------------------------------------------------------------------------

MASKS = ["none", "grad", "grad_expanded", "grad_broadcast", "computed", "computed_broadcast", "computed_3d"]
MASKS += ["computed_2d", "computed_transposed", "buffer"]


@rule("sdpa", "buffer")
@each_precision
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("layout", HEADS)
def test_sdpa(p: Precision, mask: str, layout: str) -> None:
    """Masks: a relative position bias gathered from a parameter table, contiguous (B, heads, N, N),
    expanded over the batch, or (1, heads, N, N) broadcast; one computed without gradient; a buffer."""
    b, h, n = 2, 3, 5
    tape = p.tape()
    (q, k, v), (tq, tk, tv) = _heads(p, tape, layout)
    holder = module(nn.Module(), p)
    holder.table = nn.Parameter(torch.randn(h, n, n))
    holder.register_buffer("fixed", torch.randn(1, h, n, n))
    holder.to(p.dtype)
    bias = holder.table.flatten()[torch.randperm(h * n * n)].view(1, h, n, n)  # a gather, as BEiT's
    constant = bias.detach() * 2
    attn_mask, tmask, grad = {
        "none": (None, None, True),
        "grad": (bias.expand(b, h, n, n).contiguous(), T.empty((b, h, n, n), tape.itemsize), True),
        "grad_expanded": (bias.expand(b, h, n, n), T.empty((1, h, n, n), tape.itemsize).expand(b, h, n, n), True),
        "grad_broadcast": (bias, T.empty((1, h, n, n), tape.itemsize), True),
        "computed": (constant.expand(b, h, n, n), T.empty((1, h, n, n), tape.itemsize).expand(b, h, n, n), False),
        "computed_broadcast": (constant, T.empty((1, h, n, n), tape.itemsize), False),
        "computed_3d": (constant[0], T.empty((1, h, n, n), tape.itemsize)[0], False),
        "computed_2d": (constant[0, 0], T.empty((1, h, n, n), tape.itemsize)[0, 0], False),
        "computed_transposed": (constant.mT, T.empty((1, h, n, n), tape.itemsize).transpose(-2, -1), False),
        "buffer": (holder.fixed, tape.buffer((1, h, n, n)), False),
    }[mask]
    with recorded(p, holder) as seen:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    ours = tape.sdpa(tq, tk, tv, attn_mask=tmask, mask_grad=grad)
    assert_same(f"sdpa {p.name} mask={mask} {layout}", tape, seen, ours, y)


@rule("biased_attention")
@each_precision
@pytest.mark.parametrize("bias_shape", [(1, 3, 5, 5), (3, 5, 5)], ids=["4d", "3d"])
@pytest.mark.parametrize("layout", HEADS)
def test_biased_attention(p: Precision, bias_shape: tuple[int, ...], layout: str) -> None:
    """The generated attentions' path while a relative position bias learns: scores by hand, the bias (a
    gather from a parameter table, in the module's dtype: float32 under autocast) added, softmax, ``@ v``."""
    tape = p.tape()
    (q, k, v), (tq, tk, tv) = _heads(p, tape, layout)
    holder = module(nn.Module(), p)
    holder.table = nn.Parameter(torch.randn(math.prod(bias_shape)))
    holder.register_buffer("index", torch.randperm(math.prod(bias_shape)))  # relative_position_index's role
    holder.to(p.dtype)
    with recorded(p, holder) as seen:
        bias = holder.table[holder.index].view(bias_shape)
        attn = ((q * 0.5) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        y = F.dropout(attn, 0.0, True) @ v
    ours = tape.biased_attention(tq, tk, tv, T.empty(bias_shape, tape.itemsize))
    assert_same(f"biased_attention {p.name} bias={bias_shape} {layout}", tape, seen, ours, y)


SDPA_SHAPES = {  # q, k, v
    "class_attention": ((2, 3, 1, 4), (2, 3, 5, 4), (2, 3, 5, 4)),  # one query: flash
    "value_head_size": ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 6)),  # math
    "broadcast_batch": ((1, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4)),  # math
}


@rule("sdpa")
@each_precision
@pytest.mark.parametrize("shapes", SDPA_SHAPES)
def test_sdpa_shapes(p: Precision, shapes: str) -> None:
    tape = p.tape()
    (q, tq), (k, tk), (v, tv) = (activation(p, tape, shape) for shape in SDPA_SHAPES[shapes])
    with recorded(p) as seen:
        y = F.scaled_dot_product_attention(q, k, v)
    assert_same(f"sdpa {p.name} {shapes}", tape, seen, tape.sdpa(tq, tk, tv), y)


@rule("softmax")
@each_precision
@pytest.mark.parametrize("layout", [contiguous, transposed], ids=["contiguous", "transposed"])
def test_softmax(p: Precision, layout: Layout) -> None:
    check_op(
        "softmax",
        p,
        (2, 3, 5, 5),
        lambda x: x.softmax(dim=-1),
        lambda tape, t: tape.softmax(t),
        layout,
    )


# --- activations and norms -----------------------------------------------------------------------------

TORCH_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # as generated code spells it
    "silu": nn.SiLU(),
    "relu": nn.ReLU(),
}


def test_activations_are_the_tapes() -> None:
    assert set(TORCH_ACTIVATIONS) == set(ACTIVATIONS)
    with pytest.raises(ValueError, match="choose gelu"):
        Tape(4).act(T.empty((2,), 4), "swish")


@rule("act")
@each_precision
@pytest.mark.parametrize("kind", ACTIVATIONS)
@pytest.mark.parametrize("layout", [contiguous, transposed], ids=["contiguous", "transposed"])
def test_act(p: Precision, kind: str, layout: Layout) -> None:
    check_op(
        f"act {kind}",
        p,
        (2, 6, 5),
        lambda x: TORCH_ACTIVATIONS[kind](x),
        lambda tape, t: tape.act(t, kind),
        layout,
    )


@rule("gelu")
@each_precision
def test_gelu(p: Precision) -> None:
    check_op(
        "gelu",
        p,
        (2, 5, 6),
        lambda x: F.gelu(x),
        lambda tape, t: tape.gelu(t),
        contiguous,
    )


@rule("relu_")
@each_precision
@pytest.mark.parametrize("layout", [contiguous, transposed], ids=["contiguous", "transposed"])
def test_relu_(p: Precision, layout: Layout) -> None:
    check_op(
        "relu_",
        p,
        (2, 6, 5),
        lambda x: F.relu(x, inplace=True),
        lambda tape, t: tape.relu_(t),
        layout,
    )


NORM_OPTIONS = [("layernorm", True, True), ("layernorm", True, False), ("layernorm", False, True)]
NORM_OPTIONS += [("rmsnorm", True, True), ("rmsnorm", False, True)]


def torch_norm(kind: str, dim: int, affine: bool, bias: bool) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=affine, bias=bias)
    return nn.RMSNorm(dim, eps=1e-6, elementwise_affine=affine)


def test_norms_are_the_tapes() -> None:
    assert {kind for kind, _, _ in NORM_OPTIONS} == set(NORMS)
    with pytest.raises(ValueError, match="choose layernorm"):
        Tape(4).norm(T.empty((2,), 4), "batchnorm")


@rule("norm")
@each_precision
@pytest.mark.parametrize(("kind", "affine", "bias"), NORM_OPTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("layout", [contiguous, transposed, sliced], ids=["contiguous", "transposed", "sliced"])
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_norm(p: Precision, kind: str, affine: bool, bias: bool, layout: Layout) -> None:
    norm = module(torch_norm(kind, 6, affine, bias), p)
    check_op(
        f"norm {kind} affine={affine} bias={bias}",
        p,
        (2, 6, 6),
        lambda x: norm(x),
        lambda tape, t: tape.norm(t, kind, affine, bias),
        layout,
        norm,
    )


@rule("layer_norm")
@each_precision
def test_layer_norm(p: Precision) -> None:
    norm = module(nn.LayerNorm(6), p)
    check_op(
        "layer_norm",
        p,
        (2, 5, 6),
        lambda x: norm(x),
        lambda tape, t: tape.layer_norm(t),
        contiguous,
        norm,
    )


def channels_last(t):
    return t.permute(0, 3, 1, 2)  # a (B, H, W, C) tensor seen as (B, C, H, W)


@rule("batch_norm")
@each_precision
@pytest.mark.parametrize("layout", [contiguous, channels_last], ids=["contiguous", "channels_last"])
def test_batch_norm(p: Precision, layout: Layout) -> None:
    tape = p.tape()
    shape = (2, 4, 5, 3) if layout is contiguous else (2, 5, 3, 4)
    x, t = activation(p, tape, shape, layout)
    bn = module(nn.BatchNorm2d(4), p)
    with recorded(p, bn) as seen:
        y = bn(x)
    assert_same(f"batch_norm {p.name} {layout.__name__}", tape, seen, tape.batch_norm(t), y)


# --- convolutions and pools ------------------------------------------------------------------------------


@rule("conv2d", "input")
@each_precision
@pytest.mark.parametrize(("kernel", "stride", "padding", "groups"), [(3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 1, 4)])
@pytest.mark.parametrize("layout", [contiguous, channels_last], ids=["contiguous", "channels_last"])
def test_conv2d(p: Precision, kernel: int, stride: int, padding: int, groups: int, layout: Layout) -> None:
    tape = p.tape()
    if layout is contiguous and p.input == p.dtype:  # the image: a leaf that needs no gradient
        x, t = torch.randn(2, 4, 6, 6, dtype=p.input), tape.input((2, 4, 6, 6))
    else:
        x, t = activation(p, tape, (2, 4, 6, 6) if layout is contiguous else (2, 6, 6, 4), layout)
    conv = module(nn.Conv2d(4, 8, kernel, stride, padding, groups=groups), p)
    with recorded(p, conv) as seen:
        y = conv(x)
    where = f"conv2d k{kernel} s{stride} p{padding} g{groups} {p.name} {layout.__name__}"
    assert_same(where, tape, seen, tape.conv2d(t, 8, kernel, stride, padding, groups), y)


@rule("avg_pool2d")
@each_precision
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("layout", [contiguous, channels_last], ids=["contiguous", "channels_last"])
def test_avg_pool2d(p: Precision, ceil_mode: bool, layout: Layout) -> None:
    check_op(
        f"avg_pool2d ceil={ceil_mode}",
        p,
        (2, 3, 7, 7),
        lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=ceil_mode),
        lambda tape, t: tape.avg_pool2d(t, 2, 2, ceil_mode),
        layout,
    )


@rule("adaptive_avg_pool2d")
@each_precision
@pytest.mark.parametrize("size", [1, 3, 7])
@pytest.mark.parametrize("layout", [contiguous, channels_last], ids=["contiguous", "channels_last"])
def test_adaptive_avg_pool2d(p: Precision, size: int, layout: Layout) -> None:
    check_op(
        f"adaptive_avg_pool2d {size}",
        p,
        (2, 3, 7, 10),
        lambda x: F.adaptive_avg_pool2d(x, size),
        lambda tape, t: tape.adaptive_avg_pool2d(t, size),
        layout,
    )


@rule("max_pool2d")
@each_precision
@pytest.mark.parametrize("layout", [contiguous, channels_last], ids=["contiguous", "channels_last"])
def test_max_pool2d(p: Precision, layout: Layout) -> None:
    check_op(
        "max_pool2d",
        p,
        (2, 3, 8, 8),
        lambda x: F.max_pool2d(x, 3, 2, 1),
        lambda tape, t: tape.max_pool2d(t, 3, 2, 1),
        layout,
    )


@rule("max")
@each_precision
def test_max(p: Precision) -> None:
    check_op(
        "max",
        p,
        (2, 5, 6),
        lambda x: x.max(dim=1).values,
        lambda tape, t: tape.max(t, 1),
        contiguous,
    )


# --- elementwise -----------------------------------------------------------------------------------------


@rule("mul")
@each_precision
@pytest.mark.parametrize("layout", [contiguous, transposed], ids=["contiguous", "transposed"])
def test_mul(p: Precision, layout: Layout) -> None:
    """LayerScale: x * gamma."""
    tape = p.tape()
    x, t = activation(p, tape, (2, 6, 6), layout)
    holder = module(nn.Module(), p)
    holder.gamma = nn.Parameter(torch.randn(6, dtype=p.dtype))
    with recorded(p, holder) as seen:
        y = x * holder.gamma
    assert_same(f"mul {p.name} {layout.__name__}", tape, seen, tape.mul(t), y)


PRODUCTS = {
    "same": ((2, 5, 6), contiguous, (2, 5, 6), contiguous),
    "one_transposed": ((2, 6, 5), transposed, (2, 5, 6), contiguous),
    "both_transposed": ((2, 6, 5), transposed, (2, 6, 5), transposed),
    "broadcast_row": ((2, 5, 6), contiguous, (2, 5, 1), contiguous),
    "broadcast_first": ((2, 1, 6), contiguous, (2, 6, 5), transposed),
}


@rule("product")
@each_precision
@pytest.mark.parametrize("case", PRODUCTS)
@pytest.mark.parametrize("mixed", [False, True], ids=["same_dtype", "float32_times_input"])
def test_product(p: Precision, case: str, mixed: bool) -> None:
    """Two activations: same layouts, different ones, broadcast; mixed dtypes (a float32 gate times a
    bfloat16 value) promote."""
    shape_a, layout_a, shape_b, layout_b = PRODUCTS[case]
    tape = p.tape()
    a, ta = activation(p, tape, shape_a, layout_a, dtype=F32 if mixed else None)
    b, tb = activation(p, tape, shape_b, layout_b)
    with recorded(p) as seen:
        y = a * b
    assert_same(f"product {case} {p.name} mixed={mixed}", tape, seen, tape.product(ta, tb), y)


@rule("split", "chunk", "save")
@each_precision
@pytest.mark.parametrize("how", ["sizes", "size", "chunk", "chunk_uneven"])
@pytest.mark.parametrize("dim", [-1, 1])
def test_split_and_chunk(p: Precision, how: str, dim: int) -> None:
    """Views: a GLU's two halves of one fc1 output; their product saves both, one storage counted once."""
    tape = p.tape()
    x, t = activation(p, tape, (2, 6, 6) if how in ("sizes", "chunk") else (2, 7, 7))
    if how == "sizes":
        parts, ours = x.split([3, 3], dim), tape.split(t, [3, 3], dim)
    elif how == "size":  # 3, 3, 1
        parts, ours = x.split(3, dim), tape.split(t, 3, dim)
    else:  # 3, 3; 3, 3, 1
        parts, ours = x.chunk(2 if how == "chunk" else 3, dim), tape.chunk(t, 2 if how == "chunk" else 3, dim)
    assert all(o.storage is t.storage for o in ours), "views"
    with recorded(p) as seen:
        y = parts[0] * parts[1]
    out = tape.product(ours[0], ours[1])
    assert_same(f"split {how} dim={dim} {p.name}", tape, seen, [*ours, out], [*parts, y])


@rule("pointwise", "param")
@each_precision
@pytest.mark.parametrize("other", ["scalar", "activation", "activation_transposed", "table"])
@pytest.mark.parametrize("layout", [contiguous, transposed], ids=["contiguous", "transposed"])
def test_pointwise(p: Precision, other: str, layout: Layout) -> None:
    """x * 2, x + y, x + a position table (a parameter): nothing saved."""
    tape = p.tape()
    x, t = activation(p, tape, (2, 6, 6), layout)
    holder = module(nn.Module(), p)
    holder.table = nn.Parameter(torch.randn(1, 6, 6, dtype=p.dtype))
    if other == "activation":
        y, ty = activation(p, tape, (2, 6, 6))
    elif other == "activation_transposed":
        y, ty = activation(p, tape, (2, 6, 6), transposed)
    with recorded(p, holder) as seen:
        if other == "scalar":
            z, ours = x * 2, tape.pointwise(t)
        elif other == "table":
            z, ours = x + holder.table, tape.pointwise(t, tape.param)
        else:
            z, ours = x + y, tape.pointwise(t, ty)
    assert_same(f"pointwise {other} {p.name} {layout.__name__}", tape, seen, ours, z)


@rule("mean")
@each_precision
def test_mean(p: Precision) -> None:
    check_op(
        "mean",
        p,
        (2, 5, 6),
        lambda x: x.mean(dim=1),
        lambda tape, t: tape.mean(t, 1),
        contiguous,
    )


@rule("cat", "stack")
@each_precision
@pytest.mark.parametrize("mixed", [False, True], ids=["same_dtype", "with_float32"])
def test_cat_and_stack(p: Precision, mixed: bool) -> None:
    """Nothing saved; the result takes the widest dtype (a float32 token with a bfloat16 sequence)."""
    tape = p.tape()
    a, ta = activation(p, tape, (2, 1, 6), dtype=F32 if mixed else None)
    b, tb = activation(p, tape, (2, 1, 6))
    with recorded(p) as seen:
        cat, stack = torch.cat([a, b], dim=1), torch.stack([a, b], dim=1)
    assert_same(f"cat/stack {p.name}", tape, seen, (tape.cat([ta, tb], 1), tape.stack([ta, tb], 1)), (cat, stack))


@rule("pad")
@each_precision
def test_pad(p: Precision) -> None:
    check_op(
        "pad",
        p,
        (2, 4, 4, 3),
        lambda x: F.pad(x, (0, 0, 1, 2, 2, 1)),
        lambda tape, t: tape.pad(t, (0, 0, 1, 2, 2, 1)),
        contiguous,
    )


@rule("zeros")
@each_precision
def test_zeros(p: Precision) -> None:
    """``x.new_zeros`` (the activation's dtype) and a zero token (the parameters')."""
    tape = p.tape()
    x, t = activation(p, tape, (2, 5, 6))
    with recorded(p) as seen:
        z, token = x.new_zeros(2, 3, 6), torch.zeros(2, 1, 6, dtype=p.dtype)
    assert_same(f"zeros {p.name}", tape, seen, (tape.zeros((2, 3, 6), like=t), tape.zeros((2, 1, 6))), (z, token))


# --- rotary position embedding ---------------------------------------------------------------------------


def qkv_slice(t):
    """A head's patch queries as an attention sees them: q of a fused qkv (B, N, 3, heads, head_dim), one prefix
    token dropped."""
    return t.permute(2, 0, 3, 1, 4)[0][:, :, 1:]


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """The generated modules' rotation (mixers/mhsa.j2), written again here."""
    sin, cos = rope.chunk(2, dim=-1)
    turned = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).reshape(x.shape)
    return (x * cos + turned * sin).to(x.dtype)


@rule("rotate")
@each_precision
@pytest.mark.parametrize("table", ["buffer", "learned"])
@pytest.mark.parametrize(
    ("shape", "layout", "rows"),
    [((2, 3, 5, 8), contiguous, (5, 16)), ((2, 6, 3, 3, 8), qkv_slice, (3, 5, 16))],
    ids=["contiguous_shared", "qkv_slice_per_head"],
)
def test_rotate(p: Precision, table: str, shape: tuple[int, ...], layout: Layout, rows: tuple[int, ...]) -> None:
    """A fixed table (a buffer: only sin and cos saved, as views of it) or one computed from learned
    frequencies (it needs a gradient: the products save x and the turned x too); one table for every head or
    one per head; under autocast the float32 table promotes the products, cast back to x's dtype."""
    tape = p.tape()
    x, t = activation(p, tape, shape, layout)
    holder = nn.Module()
    if table == "buffer":
        holder.register_buffer("table", torch.randn(*rows, dtype=p.dtype))
        rope, trope = holder.table, tape.buffer(rows)
    else:
        rope, trope = activation(p, tape, rows, dtype=p.dtype)
    with recorded(p, holder) as seen:
        y = apply_rope(x, rope)
    assert_same(f"rotate {table} {p.name} {layout.__name__}", tape, seen, tape.rotate(t, trope), y)


@rule("rope_table")
@each_precision
def test_rope_table(p: Precision) -> None:
    """sin and cos of the angles save them, one storage; the repeated and concatenated table is new."""
    check_op(
        "rope_table",
        p,
        (2, 3, 5, 4),
        lambda a: torch.cat((a.sin().repeat_interleave(2, -1), a.cos().repeat_interleave(2, -1)), dim=-1),
        lambda tape, t: tape.rope_table(t),
    )
