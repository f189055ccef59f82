"""Training memory, exactly: the bytes of the storages autograd saves for backward, found by tracing each
part's forward on symbolic tensors. No torch here: ``archgen count --memory`` must answer without it.

A ``T`` is what a torch tensor is for this purpose: a strided view (shape, strides, element size) of a
``Storage``. Views share their storage; ``reshape`` copies exactly when torch's would (the same stride
algorithm), and each op's output takes the memory layout torch's CPU kernel gives it, because a later
``reshape`` or ``linear`` decides between a view and a copy by that layout.

``Tape`` runs the ops. An op that autograd needs an activation of for backward calls ``save``; the tape
counts each storage once, however many views of it are saved (torch keeps one storage alive, not one per
view). Parameters and buffers are never counted: they are not activations. The rules are those of torch's
CPU kernels (torch 2.x), written next to each op; ``tests/test_memory.py`` measures every spec with
``torch.autograd.graph.saved_tensors_hooks`` and requires equality.

Every tensor carries its element size, so one trace serves a module cast to one dtype and mixed precision
(``torch.autocast("cpu", dtype)`` around a float32 module): there the lower-precision ops (linear, conv,
matmul, bmm, baddbmm, scaled-dot-product attention) run on copies of their inputs and weights in the
autocast dtype and save those copies, and every other op runs in the widest dtype of its inputs, parameters
included (CPU autocast puts none of the ops used here on its float32 list; ``x + pos_embed`` is float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
AMP = {"bf16": "bfloat16", "fp16": "float16"}  # --amp: the torch.autocast dtype (CPU autocast takes both)
OPTIMIZERS = ("adamw", "sgd")
FLOAT32 = 4  # attention's log-sum-exp and what CPU kernels compute reduced-precision inputs in (RMSNorm, math SDPA)
INT64 = 8  # indices (max-pooling, max)
NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "silu", "relu")


class Storage:
    """One allocation. Identity is what matters: views of one storage are counted once."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for size in reversed(shape):
        out.append(acc)
        acc *= max(size, 1)
    return tuple(reversed(out))


def channels_last_strides(shape: Sequence[int]) -> tuple[int, ...]:
    _, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def view_strides(shape: Sequence[int], stride: Sequence[int], new: Sequence[int]) -> tuple[int, ...] | None:
    """The strides of ``new`` as a view of (shape, stride), or None where torch's ``view`` fails and
    ``reshape`` copies (ATen's computeStride: dimensions merge only within runs that are contiguous
    among themselves; size-1 dimensions never break a run)."""
    if not shape:
        return tuple(1 for _ in new)
    if math.prod(shape) == 0:
        return tuple(stride) if tuple(shape) == tuple(new) else contiguous_strides(new)
    out = [0] * len(new)
    view_d = len(new) - 1
    chunk_base = stride[-1]
    tensor_numel, view_numel = 1, 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and stride[d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new[view_d] == 1):
                out[view_d] = view_numel * chunk_base
                view_numel *= new[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if d > 0:
                chunk_base = stride[d - 1]
                tensor_numel, view_numel = 1, 1
    return tuple(out) if view_d == -1 else None


class T:
    """A symbolic tensor: a strided view of a storage. Method names and semantics follow torch's."""

    __slots__ = ("itemsize", "shape", "storage", "stride")

    def __init__(self, storage: Storage, shape: tuple[int, ...], stride: tuple[int, ...], itemsize: int) -> None:
        self.storage, self.shape, self.stride, self.itemsize = storage, shape, stride, itemsize

    @staticmethod
    def empty(shape: Sequence[int], itemsize: int, stride: Sequence[int] | None = None) -> T:
        shape = tuple(shape)
        return T(Storage(math.prod(shape) * itemsize), shape, tuple(stride or contiguous_strides(shape)), itemsize)

    def __repr__(self) -> str:
        return f"T{self.shape} stride={self.stride}"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def _as(self, shape: Sequence[int], stride: Sequence[int]) -> T:
        return T(self.storage, tuple(shape), tuple(stride), self.itemsize)

    def is_contiguous(self) -> bool:
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if size == 1:
                continue
            if stride != expected:
                return False
            expected *= size
        return True

    def is_channels_last(self) -> bool:
        """torch's ``suggest_memory_format() == channels_last`` for a 4-D tensor (c10's
        is_channels_last_strides_2d_s4): strides non-decreasing over C, W, H, N, each at least the span of
        the dimension before; ambiguous cases fall back to contiguous."""
        if self.ndim != 4 or self.stride[1] == 0:
            return False
        low = 0
        for d in (1, 3, 2, 0):
            size, stride = self.shape[d], self.stride[d]
            if size == 0 or stride < low or (d == 0 and low == self.stride[1]):
                return False
            low = stride * size if size > 1 else stride
        return True

    def dense_layout(self) -> tuple[int, ...]:
        """Strides of an elementwise result of this tensor alone (or of ``empty_like``)."""
        return iterator_strides(self.shape, [self.stride])

    def new_like(self, itemsize: int | None = None) -> T:
        """A fresh tensor of this shape (and this dtype unless given), laid out as an elementwise result of
        this one."""
        return T.empty(self.shape, itemsize or self.itemsize, self.dense_layout())

    def is_non_overlapping_and_dense(self) -> bool:
        """c10's rule: the elements, in stride order, fill one block of memory without gaps or overlaps."""
        expected = 1
        for d in sorted((d for d in range(self.ndim) if self.shape[d] > 1), key=lambda d: self.stride[d]):
            if self.stride[d] != expected:
                return False
            expected *= self.shape[d]
        return True

    def to(self, itemsize: int) -> T:
        """``x.to(dtype)``: a copy (x itself if it has the dtype) with x's strides when x is dense and
        non-overlapping, otherwise laid out densely in x's dimension order (``empty_like``'s preserve_format)."""
        if itemsize == self.itemsize:
            return self
        return T.empty(
            self.shape, itemsize, self.stride if self.is_non_overlapping_and_dense() else self.dense_layout()
        )

    # --- views (never save anything) ----------------------------------------------------------------

    def _shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        shape = list(shape)
        if -1 in shape:
            i = shape.index(-1)
            rest = math.prod(s for j, s in enumerate(shape) if j != i)
            shape[i] = self.numel // rest
        assert math.prod(shape) == self.numel, (self.shape, shape)
        return tuple(shape)

    def view(self, *shape: int) -> T:
        new = self._shape(shape)
        stride = view_strides(self.shape, self.stride, new)
        assert stride is not None, f"view {self.shape} -> {new} needs a copy"
        return self._as(new, stride)

    def reshape(self, *shape: int) -> T:
        new = self._shape(shape)
        stride = view_strides(self.shape, self.stride, new)
        return self._as(new, stride) if stride is not None else T.empty(new, self.itemsize)

    def is_channels_last_contiguous(self) -> bool:
        """``is_contiguous(memory_format=torch.channels_last)`` of a 4-D tensor."""
        want = channels_last_strides(self.shape)
        return all(size == 1 or st == w for size, st, w in zip(self.shape, self.stride, want, strict=True))

    def to_channels_last(self) -> T:
        """``contiguous(memory_format=torch.channels_last)``: a copy unless already laid out so."""
        if self.is_channels_last_contiguous():
            return self
        return T.empty(self.shape, self.itemsize, channels_last_strides(self.shape))

    def permute(self, *dims: int) -> T:
        return self._as([self.shape[d] for d in dims], [self.stride[d] for d in dims])

    def transpose(self, a: int, b: int) -> T:
        dims = list(range(self.ndim))
        dims[a], dims[b] = dims[b], dims[a]
        return self.permute(*dims)

    def flatten(self, start: int = 0, end: int = -1) -> T:
        end = end % self.ndim
        merged = math.prod(self.shape[start : end + 1])
        return self.reshape(*self.shape[:start], merged, *self.shape[end + 1 :])

    def unflatten(self, dim: int, sizes: Sequence[int]) -> T:
        return self.view(*self.shape[:dim], *sizes, *self.shape[dim + 1 :])

    def expand(self, *shape: int) -> T:
        pairs = zip(self.shape, shape, self.stride, strict=True)
        stride = [0 if old == 1 and new != 1 else st for old, new, st in pairs]
        return self._as(shape, stride)

    def select(self, dim: int, index: int) -> T:
        return self._as(self.shape[:dim] + self.shape[dim + 1 :], self.stride[:dim] + self.stride[dim + 1 :])

    def unbind(self, dim: int = 0) -> tuple[T, ...]:
        return tuple(self.select(dim, i) for i in range(self.shape[dim]))

    def __getitem__(self, index: int | slice | tuple[int | slice, ...]) -> T:
        """Basic indexing: integers and slices, one per leading dimension."""
        items = index if isinstance(index, tuple) else (index,)
        shape, stride = [], []
        for d, (size, st) in enumerate(zip(self.shape, self.stride, strict=True)):
            item = items[d] if d < len(items) else slice(None)
            if isinstance(item, int):
                continue
            start, stop, step = item.indices(size)
            shape.append(len(range(start, stop, step)))
            stride.append(st * step)
        return self._as(shape, stride)


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """torch's broadcasting: shapes aligned at the last dimension, a size 1 (or a missing dimension)
    stretched to the other's size."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for d, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                assert out[d] in (1, size), f"shapes {shapes} do not broadcast"
                out[d] = size
    return tuple(out)


def broadcast_strides(t: T, shape: Sequence[int]) -> tuple[int, ...]:
    """``t``'s strides as an operand of ``shape``: 0 along a dimension it is broadcast over."""
    lead = len(shape) - t.ndim
    stride = [0] * lead
    for d, (size, st) in enumerate(zip(t.shape, t.stride, strict=True)):
        stride.append(0 if size == 1 and shape[lead + d] != 1 else st)
    return tuple(stride)


def iterator_strides(shape: Sequence[int], operands: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Strides TensorIterator gives a new elementwise result of ``shape`` from its operands' strides
    (broadcast: 0 along a stretched dimension): it orders the dimensions as the operands' strides are
    ordered and lays them out densely. Its insertion sort starts from the last dimension innermost and moves
    a dimension inwards past one of larger stride in the first operand that tells them apart (a broadcast
    dimension tells nothing), or of equal stride and smaller size."""
    ndim = len(shape)
    perm = list(range(ndim - 1, -1, -1))  # innermost first

    def should_swap(d0: int, d1: int) -> int:
        for stride in operands:
            s0, s1 = stride[d0], stride[d1]
            if s0 == 0 or s1 == 0:
                continue
            if s0 != s1:
                return 1 if s0 > s1 else -1
            if shape[d0] > shape[d1]:
                return 1
        return 0

    for i in range(ndim):
        d1 = i
        for d0 in range(i - 1, -1, -1):
            order = should_swap(perm[d0], perm[d1])
            if order > 0:
                perm[d0], perm[d1] = perm[d1], perm[d0]
                d1 = d0
            elif order < 0:
                break
    out, acc = [0] * ndim, 1
    for d in perm:
        out[d] = acc
        acc *= shape[d]
    return tuple(out)


def elementwise(tensors: Sequence[T], itemsize: int) -> T:
    """A new result of an elementwise op of ``tensors`` (broadcast together): when all have one shape and
    are all contiguous, all channels-last, or all dense with equal strides, TensorIterator keeps that layout;
    otherwise it orders the dimensions by the operands' strides (``iterator_strides``)."""
    shape = broadcast_shape(*(t.shape for t in tensors))
    if all(t.shape == shape for t in tensors):
        first = tensors[0]
        if all(t.is_contiguous() for t in tensors):
            return T.empty(shape, itemsize)
        if len(shape) == 4 and all(t.is_channels_last_contiguous() for t in tensors):
            return T.empty(shape, itemsize, channels_last_strides(shape))
        if all(t.is_non_overlapping_and_dense() and t.stride == first.stride for t in tensors):
            return T.empty(shape, itemsize, first.stride)
    return T.empty(shape, itemsize, iterator_strides(shape, [broadcast_strides(t, shape) for t in tensors]))


def _flash_serves(q: T, k: T, v: T, attn_mask: T | None, mask_grad: bool) -> bool:
    """Whether torch's CPU flash attention runs (else the math path): not for a mask that needs a gradient
    (the kernel computes none for it) or has 3 dimensions (it takes 2 or 4), nor for operands whose last
    dimension is not contiguous, whose head sizes differ, or whose batch and head sizes differ (broadcast)."""
    if attn_mask is not None and (mask_grad or attn_mask.ndim not in (2, 4)):
        return False
    if any(t.stride[-1] != 1 for t in (q, k, v)):
        return False
    return q.shape[-1] == k.shape[-1] == v.shape[-1] and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]


def pool_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """ATen's pooling_output_shape (dilation 1)."""
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class Tape:
    """Runs ops on symbolic tensors and counts the bytes autograd saves, by scope.

    ``itemsize``: the dtype of the module's parameters and of the input image. ``autocast``: the element size
    of the ``torch.autocast`` dtype the forward runs under, or None. ``checkpointing``: blocks run under
    activation checkpointing (the generated ``_block``): only their inputs are saved, and what runs inside is
    not recorded (backward recomputes it under the same autocast state).
    """

    def __init__(self, itemsize: int, checkpointing: bool = False, autocast: int | None = None) -> None:
        self.itemsize = itemsize
        self.autocast = autocast
        self.checkpointing = checkpointing
        self.total = 0
        self._seen: set[Storage] = set()  # held, not ids: a freed id would be reused
        self._recording = True
        self.blocks: list[int] = []  # bytes each block of the last traced stage saved
        self.recompute = 0  # the most one checkpointed block saves again when backward recomputes it
        self._shadow: set[Storage] = set()
        self._fixed: set[Storage] = set()  # parameters and buffers that ops save (``buffer``): never counted
        self.rope: T | None = None  # the rotary table one block receives, once the model's table is traced

    def input(self, shape: Sequence[int]) -> T:
        return T.empty(shape, self.itemsize)

    def save(self, *tensors: T) -> None:
        tensors = tuple(t for t in tensors if t.storage not in self._fixed)
        if not self._recording:
            self._shadow.update(t.storage for t in tensors)
            return
        for t in tensors:
            if t.storage not in self._seen:
                self._seen.add(t.storage)
                self.total += t.storage.nbytes

    @contextmanager
    def unrecorded(self) -> Iterator[None]:
        """What runs inside a checkpointed block: traced for its output, not saved (recomputed in backward)."""
        before, self._recording = self._recording, False
        self._shadow = set()
        try:
            yield
        finally:
            self._recording = before
            self.recompute = max(self.recompute, sum(s.nbytes for s in self._shadow))

    def repeat(self, x: T, depth: int, run: Callable[[T], T]) -> tuple[T, list[int]]:
        """``depth`` identical blocks: ``run(x) -> x`` traced until a block's input layout repeats (its
        input is then a fresh output of the same layout, so every later block saves the same bytes).
        Returns the output and the bytes each block saves."""
        per_block: list[int] = []
        for i in range(depth):
            before = self.total
            y = run(x)
            per_block.append(self.total - before)
            steady = i >= 1 and y.shape == x.shape and y.stride == x.stride
            x = y
            if steady and i + 1 < depth:
                rest = depth - i - 1
                self.total += rest * per_block[-1]
                per_block += [per_block[-1]] * rest
                break
        return x, per_block

    # --- dtypes -------------------------------------------------------------------------------------

    @property
    def low(self) -> int:
        """Element size the lower-precision ops compute in: the autocast dtype, else the module's."""
        return self.autocast or self.itemsize

    def _cast(self, x: T) -> T:
        """An input of a lower-precision op as the op sees it: under autocast a copy in the autocast dtype
        (never cached: autocast caches casts of leaf tensors that require grad, i.e. parameters, only)."""
        return x.to(self.low)

    def _weight(self, *shape: int) -> None:
        """A parameter a lower-precision op saves for the gradient of its input. Unchanged it is a parameter,
        not an activation; under autocast the op saves the copy in the autocast dtype, a new storage. (Autocast
        caches that copy for the forward, so a parameter used twice would be copied once; each parameter here
        is used once, and a slice or expand of one is not a parameter: it is copied at every use.)"""
        if self.autocast:
            self.save(T.empty(shape, self.autocast))

    def _widest(self, *tensors: T) -> int:
        """Element size of an op's result from inputs of mixed dtypes (type promotion: the widest)."""
        return max(t.itemsize for t in tensors)

    # --- ops that save for backward ------------------------------------------------------------------
    # Each returns its output; what it saves follows the backward formula of torch's CPU kernel.

    def linear(self, x: T, out_features: int, bias: bool = True) -> T:
        """nn.Linear: the weight's gradient needs the input, the input's the weight. A 2-D input is saved as
        it is (addmm); other inputs as ``reshape(-1, in_features)``, which copies a layout that cannot be
        flattened (a slice)."""
        del bias  # with or without bias the same input is saved, flattened the same way; a bias is never saved
        x = self._cast(x)
        self.save(x if x.ndim == 2 else x.reshape(-1, x.shape[-1]))
        self._weight(out_features, x.shape[-1])
        return T.empty((*x.shape[:-1], out_features), self.low)

    def qkv(self, x: T, heads: int) -> tuple[T, T, T]:
        """A fused qkv Linear split into per-head q, k, v, each (B, heads, N, head_dim): views of one
        storage, which is what any op saving them keeps."""
        b, n, c = x.shape
        qkv = self.linear(x, 3 * c).reshape(b, n, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def matmul(self, a: T, b: T) -> T:
        """a @ b of two batched matrices: both expanded to the common batch shape and reshaped to 3-D for
        bmm (a copy where the batch dimensions cannot merge, e.g. heads of a fused qkv), and both saved."""
        return self._matmul(self._cast(a), self._cast(b))

    def _matmul(self, a: T, b: T) -> T:
        """matmul of two operands of one dtype, as the op runs them."""
        batch = tuple(max(p, q) for p, q in zip(a.shape[:-2], b.shape[:-2], strict=True))
        n, m, p = a.shape[-2], a.shape[-1], b.shape[-1]
        flat = math.prod(batch)
        a3 = a.expand(*batch, n, m).reshape(flat, n, m)
        b3 = b.expand(*batch, m, p).reshape(flat, m, p)
        self.save(a3, b3)
        return T.empty((flat, n, p), a.itemsize).view(*batch, n, p)

    def baddbmm(self, batch2: T) -> T:
        """baddbmm(bias, weight.expand(B, H, H), batch2): the weight's gradient needs batch2, batch2's the
        expanded weight (under autocast a contiguous (B, H, H) copy; unchanged, a view of the parameter)."""
        batch2 = self._cast(batch2)
        self.save(batch2)
        self._weight(batch2.shape[0], batch2.shape[1], batch2.shape[1])
        return T.empty(batch2.shape, self.low)

    def sdpa(self, q: T, k: T, v: T, attn_mask: T | None = None, mask_grad: bool = True) -> T:
        """``F.scaled_dot_product_attention`` (dropout 0) of (B, heads, L, head_dim) q, k, v, with an optional
        additive float ``attn_mask`` broadcastable to (B, heads, Lq, Lk); ``mask_grad``: the mask requires
        grad (a relative position bias gathered from a parameter table), else it is a constant.

        The CPU flash kernel runs where it can: it saves q, k, v, the mask (as it is: a buffer is not counted,
        a computed mask is), its output and the log-sum-exp of each query row, kept in float32 whatever the
        dtype. Its output is laid out as q (``empty_like``: q's strides where q is dense, as a (B, heads, N,
        head_dim) slice of a fused qkv is not), so for q from a fused qkv ``transpose(1, 2).reshape(B, Lq, C)``
        is a view. Under autocast every operand, the mask too, is a copy in the autocast dtype.

        torch takes the math path instead where the flash kernel cannot serve (``_flash_serves``). The math
        path runs in float32 even for bfloat16 or float16 operands (it upcasts them, then casts its output
        back): q and k^T are each scaled by sqrt(scale) (new tensors, laid out as their inputs) and
        multiplied with matmul, which saves both as 3-D batches; the mask is added in place (nothing saved);
        softmax saves the attention matrix (B, heads, Lq, Lk), which the second matmul saves again as a view,
        with v as a 3-D batch (a view of v where its batch dimensions merge, a copy otherwise). Its output is
        contiguous (B, heads, Lq, head_dim), so ``transpose(1, 2).reshape(B, Lq, C)`` copies."""
        q, k, v = self._cast(q), self._cast(k), self._cast(v)
        if not _flash_serves(q, k, v, attn_mask, mask_grad):
            q, k, v = q.to(FLOAT32), k.to(FLOAT32), v.to(FLOAT32)
            scores = self._matmul(q.new_like(), k.transpose(-2, -1).new_like())
            return self._matmul(self.softmax(scores), v).to(self.low)
        if attn_mask is not None:
            self.save(self._cast(attn_mask))
        b, h, lq, _ = q.shape
        layout = q.stride if q.is_non_overlapping_and_dense() else q.dense_layout()
        out = T.empty((b, h, lq, v.shape[-1]), self.low, layout)
        lse = T.empty((b, h, lq), FLOAT32)
        self.save(q, k, v, out, lse)
        return out

    def biased_attention(self, q: T, k: T, v: T, bias: T) -> T:
        """Attention by hand with an additive bias that takes a gradient (a relative position bias: the training
        path of the generated window and BEiT attentions, as timm's): ``(q * scale) @ k^T``, where q * scale is
        a new tensor laid out as q and matmul saves both operands as 3-D batches; plus the bias, which saves
        nothing, the sum taking the wider dtype (float32 for a float32 bias under autocast); softmax, which saves
        its output; dropout (p = 0 returns its input); then ``@ v``, which saves the softmax output (under
        autocast a copy in the autocast dtype) and v."""
        scores = self.matmul(self._cast(q).new_like(), k.transpose(-2, -1))
        scores = elementwise((scores, bias), self._widest(scores, bias))
        return self.matmul(self.softmax(scores), v)

    def softmax(self, x: T) -> T:
        """Softmax: its backward needs its output only."""
        out = T.empty(x.shape, x.itemsize)
        self.save(out)
        return out

    def act(self, x: T, kind: str) -> T:
        """An activation (``ACTIVATIONS``), in its input's dtype (autocast casts none). GELU (erf or tanh) and
        SiLU save their input; ReLU (not in place) its output; quick GELU, ``x * torch.sigmoid(1.702 * x)``,
        is three ops: the scalar product saves nothing, sigmoid saves its output and the product both
        operands, so x and the sigmoid's output."""
        if kind in ("gelu", "gelu_tanh", "silu"):
            self.save(x)
            return x.new_like()
        if kind == "relu":
            out = x.new_like()
            self.save(out)
            return out
        if kind == "quick_gelu":
            gate = x.new_like()  # sigmoid(1.702 * x), laid out as x
            self.save(x, gate)
            return elementwise((x, gate), x.itemsize)
        raise ValueError(f"activation {kind!r}: choose {', '.join(ACTIVATIONS)}")

    def gelu(self, x: T) -> T:
        """GELU (erf)."""
        return self.act(x, "gelu")

    def relu_(self, x: T) -> T:
        """In-place ReLU: its backward needs the result, which is the input's storage."""
        self.save(x)
        return x

    def norm(self, x: T, kind: str = "layernorm", affine: bool = True, bias: bool = True) -> T:
        """A norm over the last dimension (``NORMS``); ``affine``: it has a weight (and, for LayerNorm, a
        ``bias`` unless False). The output is in the input's dtype (autocast casts neither).

        LayerNorm (one CPU kernel) saves its input, as it is, and a mean and an inverse standard deviation per
        row: in the parameters' dtype when it has any (float32 for a bfloat16 input under autocast), else in
        the input's. The output is contiguous.

        RMSNorm on CPU is torch's composite (the fused kernel serves no input that needs a gradient): it
        upcasts the input to float32 (the input itself when float32), whose square's mean gives a float32
        inverse RMS per row; ``pow`` and the product keep the upcast input, ``rsqrt`` its result; with a
        weight, the product by the weight keeps the float32 normalised input too. The result is made
        contiguous, then cast back to the input's dtype."""
        stats = (*x.shape[:-1], 1)
        if kind == "layernorm":
            itemsize = self.itemsize if affine else x.itemsize
            self.save(x, T.empty(stats, itemsize), T.empty(stats, itemsize))
            return T.empty(x.shape, x.itemsize)
        if kind == "rmsnorm":
            wide = x.to(FLOAT32)
            self.save(wide, T.empty(stats, FLOAT32))
            if affine:
                self.save(wide.new_like())  # x * rsqrt(mean(x^2) + eps), before the weight
            return T.empty(x.shape, x.itemsize)
        raise ValueError(f"norm {kind!r}: choose {', '.join(NORMS)}")

    def layer_norm(self, x: T) -> T:
        """LayerNorm with weight and bias."""
        return self.norm(x)

    def batch_norm(self, x: T) -> T:
        """BatchNorm2d in training: saves its input and a mean and an inverse standard deviation per
        channel (in the parameters' dtype, as LayerNorm); the output keeps the input's memory format and dtype."""
        c = x.shape[1]
        self.save(x, T.empty((c,), self.itemsize), T.empty((c,), self.itemsize))
        return self._conv_layout(x.shape, x, x.itemsize)

    def conv2d(self, x: T, out_channels: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1) -> T:
        """Conv2d: saves its input and weight whatever needs a gradient; the output takes the input's memory
        format."""
        x = self._cast(x)
        self.save(x)
        self._weight(out_channels, x.shape[1] // groups, kernel, kernel)
        b, _, h, w = x.shape
        size = ((h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1)
        return self._conv_layout((b, out_channels, *size), x, self.low)

    def avg_pool2d(self, x: T, kernel: int, stride: int, ceil_mode: bool = False) -> T:
        """avg_pool2d: its backward reads the input (for its shape and padding)."""
        self.save(x)
        b, c, h, w = x.shape
        size = (pool_size(h, kernel, stride, 0, ceil_mode), pool_size(w, kernel, stride, 0, ceil_mode))
        return self._conv_layout((b, c, *size), x, x.itemsize)

    def adaptive_avg_pool2d(self, x: T, size: int) -> T:
        """adaptive_avg_pool2d to ``size`` x ``size``: its backward reads the input. To 1 x 1 torch takes the
        mean over the grid instead, which saves nothing (channels-last input: a channels-last result)."""
        b, c, _, _ = x.shape
        if size != 1:
            self.save(x)
        return self._conv_layout((b, c, size, size), x, x.itemsize)

    def max_pool2d(self, x: T, kernel: int, stride: int, padding: int) -> T:
        """max_pool2d: saves its input and the int64 index of every maximum."""
        b, c, h, w = x.shape
        size = (pool_size(h, kernel, stride, padding, False), pool_size(w, kernel, stride, padding, False))
        out = self._conv_layout((b, c, *size), x, x.itemsize)
        indices = T(Storage(out.numel * INT64), out.shape, out.stride, INT64)
        self.save(x, indices)
        return out

    def max(self, x: T, dim: int) -> T:
        """max over a dimension: saves the int64 indices of the maxima."""
        shape = x.shape[:dim] + x.shape[dim + 1 :]
        self.save(T.empty(shape, INT64))
        return T.empty(shape, x.itemsize)

    def mul(self, x: T) -> T:
        """x * parameter (LayerScale): the parameter's gradient needs x; the result takes the wider dtype."""
        self.save(x)
        return x.new_like(self._widest(x, self.param))

    def product(self, a: T, b: T) -> T:
        """a * b of two activations (a GLU's ``act(gate) * x``): each one's gradient needs the other, so both
        are saved as they are (not cast, not broadcast); the result takes the wider dtype and the broadcast
        shape, laid out as ``elementwise`` says."""
        self.save(a, b)
        return elementwise((a, b), self._widest(a, b))

    def rope_table(self, angles: T) -> T:
        """A rotary table from its angles (..., pairs): ``torch.cat((a.sin().repeat_interleave(2, -1),
        a.cos().repeat_interleave(2, -1)), dim=-1)``. sin and cos each save the angles (one storage);
        repeat_interleave and cat save nothing. A new contiguous (..., 4 * pairs) tensor in the angles' dtype."""
        self.save(angles)
        return T.empty((*angles.shape[:-1], 4 * angles.shape[-1]), angles.itemsize)

    def rotate(self, x: T, table: T) -> T:
        """``apply_rope(x, table)``: x (..., N, head_dim) with each channel pair turned, ``(x * cos + turned * sin)
        .to(x.dtype)`` where sin, cos are the halves of table (..., N, 2 * head_dim) and turned is
        ``torch.stack((-x[..., 1::2], x[..., ::2]), -1).reshape(x.shape)`` (a new contiguous tensor). x's gradient
        needs cos and sin, saved as the views they are; a table that needs a gradient (computed from learned
        frequencies, not a buffer: ``buffer``) makes the products save x and turned too. Each product takes the
        wider dtype (a float32 table under autocast); the sum is cast back to x's dtype."""
        sin, cos = self.chunk(table, 2, -1)
        grad = table.storage not in self._fixed
        turned = T.empty(x.shape, x.itemsize)
        self.save(cos, sin, *((x, turned) if grad else ()))
        a = elementwise((x, cos), self._widest(x, cos))
        b = elementwise((turned, sin), self._widest(turned, sin))
        return elementwise((a, b), self._widest(a, b)).to(x.itemsize)

    # --- ops that save nothing -----------------------------------------------------------------------

    def buffer(self, shape: Sequence[int]) -> T:
        """A parameter or buffer operand of this shape in the module's dtype (a constant mask): an op may save
        it, but it is never counted (it is not an activation); a copy of it (autocast's) is."""
        t = T.empty(shape, self.itemsize)
        self._fixed.add(t.storage)
        return t

    @property
    def param(self) -> T:
        """A stand-in for a parameter or buffer operand (a position table, a token): only its dtype matters."""
        return T.empty((), self.itemsize)

    def pointwise(self, x: T, other: T | None = None) -> T:
        """x + y, x * scalar, x + a table (``other=tape.param``): nothing saved. The result takes the wider
        dtype and the broadcast shape, laid out as TensorIterator lays it out (``elementwise``)."""
        if other is None:
            return x.new_like()
        return elementwise((x, other), self._widest(x, other))

    def mean(self, x: T, dim: int) -> T:
        return T.empty(x.shape[:dim] + x.shape[dim + 1 :], x.itemsize)

    def cat(self, tensors: Sequence[T], dim: int) -> T:
        shape = list(tensors[0].shape)
        shape[dim] = sum(t.shape[dim] for t in tensors)
        return T.empty(shape, self._widest(*tensors))

    def stack(self, tensors: Sequence[T], dim: int) -> T:
        shape = list(tensors[0].shape)
        shape.insert(dim, len(tensors))
        return T.empty(shape, self._widest(*tensors))

    def pad(self, x: T, pads: Sequence[int]) -> T:
        """F.pad (constant): pads the last dimensions, (last_lo, last_hi, next_lo, next_hi, ...)."""
        shape = list(x.shape)
        for i in range(0, len(pads), 2):
            shape[-1 - i // 2] += pads[i] + pads[i + 1]
        return T.empty(shape, x.itemsize)

    def split(self, x: T, sizes: int | Sequence[int], dim: int = -1) -> tuple[T, ...]:
        """``torch.split``: views along ``dim``, of the given sizes (or of ``sizes`` each, the last shorter)."""
        n = x.shape[dim]
        if isinstance(sizes, int):
            sizes = [min(sizes, n - start) for start in range(0, n, sizes)] or [0]
        assert sum(sizes) == n, f"split sizes {list(sizes)} of a dimension of {n}"
        lead = (slice(None),) * (dim % x.ndim)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return tuple(x[(*lead, slice(start, start + size))] for start, size in zip(starts, sizes, strict=True))

    def chunk(self, x: T, chunks: int, dim: int = -1) -> tuple[T, ...]:
        """``torch.chunk``: views of ceil(size / chunks) each (the last shorter; fewer when they run out)."""
        return self.split(x, -(-x.shape[dim] // chunks), dim)

    def zeros(self, shape: Sequence[int], like: T | None = None) -> T:
        """A new tensor of ``like``'s dtype (``x.new_zeros``), or of the parameters' (an expanded token)."""
        return T.empty(shape, like.itemsize if like is not None else self.itemsize)

    def _conv_layout(self, shape: Sequence[int], x: T, itemsize: int) -> T:
        """A new 4-D tensor in the memory format torch suggests for ``x`` (channels-last or contiguous)."""
        if x.is_channels_last():
            return T.empty(shape, itemsize, channels_last_strides(shape))
        return T.empty(shape, itemsize)


@dataclass(frozen=True)
class Footprint:
    """Bytes of one training step at a batch size and dtype; activations per step of forward_features.
    ``dtype`` is the module's (weights, gradients, optimizer state); ``amp`` the autocast dtype, if any."""

    batch: int
    dtype: str
    amp: str | None
    checkpointing: bool
    optimizer: str
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    steps: tuple[StepMemory, ...]
    recompute_bytes: int = 0  # checkpointing: what the largest block saves again while backward recomputes it

    @property
    def precision(self) -> str:
        return precision(self.dtype, self.amp)

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activation_bytes

    def as_dict(self) -> dict[str, object]:
        return {
            "batch": self.batch,
            "dtype": self.dtype,
            "amp": self.amp,
            "checkpointing": self.checkpointing,
            "optimizer": self.optimizer,
            "params_bytes": self.params_bytes,
            "grads_bytes": self.grads_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "activation_bytes": self.activation_bytes,
            "total_bytes": self.total_bytes,
            "recompute_bytes": self.recompute_bytes,
            "stages": [s.as_dict() for s in self.steps],
            "block_kinds": [
                {"kind": kind, "blocks": blocks, "activation_bytes": total} for kind, blocks, total in self.by_kind()
            ],
        }

    def by_kind(self) -> list[tuple[str, int, int]]:
        """(block kind, blocks, activation bytes) summed over the stages built of that block."""
        out: dict[str, tuple[int, int]] = {}
        for s in self.steps:
            if s.per_block:
                blocks, total = out.get(s.kind, (0, 0))
                out[s.kind] = (blocks + len(s.per_block), total + s.activation_bytes)
        return [(kind, blocks, total) for kind, (blocks, total) in out.items()]


@dataclass(frozen=True)
class StepMemory:
    name: str  # attribute path of the step in the generated module (``blocks``, ``network.2``, ``head``)
    kind: str  # what it is: the stage table's description
    params: int
    activation_bytes: int
    per_block: tuple[int, ...] = ()  # bytes each block saves (stages of blocks)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "kind": self.kind, "params": self.params}
        out["activation_bytes"] = self.activation_bytes
        if self.per_block:
            out["blocks"] = len(self.per_block)
            out["activation_bytes_per_block"] = self.per_block[-1]
        return out


def precision(dtype: str, amp: str | None) -> str:
    """How a step runs, in words: ``float32`` or ``float32 weights, bf16 autocast``."""
    return f"{dtype} weights, {amp} autocast" if amp else dtype


def optimizer_bytes(optimizer: str, trainable: int, tensors: int, itemsize: int) -> int:
    """torch.optim state after its first step. AdamW: exp_avg and exp_avg_sq like each parameter, and a
    float32 ``step`` scalar tensor per parameter tensor. SGD with momentum (timm's default 0.9): one
    momentum buffer like each parameter."""
    if optimizer == "adamw":
        return 2 * trainable * itemsize + FLOAT32 * tensors
    if optimizer == "sgd":
        return trainable * itemsize
    raise ValueError(f"optimizer {optimizer!r}: choose adamw or sgd")
