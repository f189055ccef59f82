"""Training memory: the analytic bytes (archgen.memory) against what torch keeps.

Activations are measured with ``torch.autograd.graph.saved_tensors_hooks``: the distinct storages autograd
saves during one training-mode forward (parameters and buffers excluded, the input image included). Models
above ``REAL_LIMIT`` parameters run under ``FakeTensorMode`` (the same autograd formulas and stride rules,
no data), which ``test_fake_tensors_save_what_real_ones_do`` checks against real tensors per family.
Parameters, gradients and optimizer state are measured after a real AdamW or SGD step.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from archgen.compiler import IR
from archgen.geometry import Size, size_text
from archgen.memory import Storage, T, Tape, view_strides
from conftest import ALL, HYBRIDS, SPECS, factory, family_smallest, ids, ir_of, non_square, saved_activation_bytes

BATCH, IMG = 2, 224
REAL_LIMIT = 30_000_000  # parameters; larger models are measured on fake tensors
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def saved_bytes(
    model: torch.nn.Module, dtype: torch.dtype, checkpointing: bool, size: Size = (IMG, IMG), batch: int = BATCH
) -> int:
    return saved_activation_bytes(model, dtype, checkpointing, batch, size)


def measured(
    build: Callable[..., torch.nn.Module], dtype: torch.dtype, fake: bool, size: Size = (IMG, IMG), batch: int = BATCH
) -> dict[bool, int]:
    """Saved bytes without and with grad checkpointing."""
    if not fake:
        model = build(img_size=size).to(dtype)
        return {ckpt: saved_bytes(model, dtype, ckpt, size, batch) for ckpt in (False, True)}
    with torch.device("meta"):
        meta = build(img_size=size).to(dtype)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = meta.to_empty(device="cpu")
        return {ckpt: saved_bytes(model, dtype, ckpt, size, batch) for ckpt in (False, True)}


# float32 for every spec; bfloat16 (the itemsize and the casts its rules add) for the smallest of each family and
# each hybrid: the same parts, and bf16 matmuls on CPU cost several times float32's
CASES = [(p, "float32") for p in ALL] + [(p, "bfloat16") for p in family_smallest()]


@pytest.mark.parametrize(("path", "dtype"), CASES, ids=[f"{p.stem}-{d}" for p, d in CASES])
def test_activation_bytes_equal_what_autograd_saves(path: Path, dtype: str) -> None:
    ir = ir_of(path)
    fake = ir.count(IMG).params > REAL_LIMIT
    got = measured(factory(path), DTYPES[dtype], fake)
    gc.collect()
    for ckpt, actual in got.items():
        fp = ir.memory(IMG, BATCH, dtype, ckpt)
        steps = ", ".join(f"{s.name} {s.activation_bytes:,}" for s in fp.steps)
        where = f"{path.stem} @{IMG} batch {BATCH} {dtype} checkpointing={ckpt}"
        assert fp.activation_bytes == actual, (
            f"{where}: analytic activation bytes {fp.activation_bytes:,} != saved by autograd {actual:,} "
            f"(analytic per step: {steps})"
        )


# the smallest spec of each family at a non-square size (H, about 1.5 H), batch 1, float32
NON_SQUARE = [(p, size) for p in family_smallest() if (size := non_square(p)) is not None]


@pytest.mark.parametrize(("path", "size"), NON_SQUARE, ids=[f"{p.stem}@{size_text(s)}" for p, s in NON_SQUARE])
def test_activation_bytes_at_a_non_square_size(path: Path, size: Size) -> None:
    ir = ir_of(path)
    got = measured(factory(path), torch.float32, True, size, batch=1)  # fake tensors: as real ones, see below
    gc.collect()
    for ckpt, actual in got.items():
        analytic = ir.memory(size, 1, "float32", ckpt).activation_bytes
        where = f"{path.stem} @{size_text(size)} batch 1 float32 checkpointing={ckpt}"
        assert analytic == actual, f"{where}: analytic activation bytes {analytic:,} != saved by autograd {actual:,}"


FAMILIES = ["deit_ti", "deit3_s", "cait_xxs24", "ceit_t", "deepvit_s", "volo_d1"]


@pytest.mark.parametrize("name", FAMILIES)
def test_fake_tensors_save_what_real_ones_do(name: str) -> None:
    """Large models are measured on fake tensors; one model per family shows that changes nothing."""
    (path,) = [p for p in SPECS if p.stem == name]
    for dtype in (torch.float32, torch.bfloat16):
        assert measured(factory(path), dtype, fake=True) == measured(factory(path), dtype, fake=False), name


@pytest.mark.parametrize("name", FAMILIES)
def test_float16_activation_bytes(name: str) -> None:
    """float16 keeps what bfloat16 keeps on CPU (statistics in the activation dtype, log-sum-exp in float32)."""
    (path,) = [p for p in SPECS if p.stem == name]
    got = measured(factory(path), torch.float16, fake=False)
    for ckpt, actual in got.items():
        analytic = ir_of(path).memory(IMG, BATCH, "float16", ckpt).activation_bytes
        assert analytic == actual, f"{name} float16 checkpointing={ckpt}: analytic {analytic:,} != saved {actual:,}"


# --- mixed precision (--amp): a float32 module whose forward runs under torch.autocast on CPU --------------

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_FAMILIES = ["vit_s16", "deit_ti", "deit_ti_distilled", "deit3_s", "cait_xxs24", "volo_d1", "ceit_t", "deepvit_s"]
AMP_IMG = 64  # every op and layout rule of 224 at a fraction of the time; the slow test runs 224


def assert_autocast_exact(path: Path, img: int, amps: tuple[str, ...] = tuple(AMP)) -> None:
    """Real tensors: FakeTensorMode's BatchNorm keeps bfloat16 statistics under autocast, the CPU kernel float32.
    The module is left uninitialised (what autograd saves does not depend on the values)."""
    with torch.device("meta"):
        meta = factory(path)(img_size=img)
    model = meta.to_empty(device="cpu")
    for module in model.modules():  # buffers outside the state dict (a relative position index), as timm does
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()
    ir = ir_of(path)
    for amp in amps:
        for ckpt in (False, True):
            saved = saved_activation_bytes(model, torch.float32, ckpt, BATCH, img, autocast=AMP[amp])
            fp = ir.memory(img, BATCH, "float32", ckpt, amp=amp)
            steps = ", ".join(f"{s.name} {s.activation_bytes:,}" for s in fp.steps)
            assert fp.activation_bytes == saved, (
                f"{path.stem} @{img} batch {BATCH} --amp {amp} checkpointing={ckpt}: analytic activation bytes "
                f"{fp.activation_bytes:,} != saved by autograd {saved:,} (analytic per step: {steps})"
            )


@pytest.mark.parametrize("name", AMP_FAMILIES)
def test_autocast_activation_bytes_equal_what_autograd_saves(name: str) -> None:
    """One spec per family under bf16 autocast, with and without grad checkpointing; fp16 for one (CPU fp16
    kernels are slow here; the slow test below runs fp16 for every family)."""
    assert_autocast_exact(
        next(p for p in SPECS if p.stem == name), AMP_IMG, ("bf16", "fp16") if name == "deit_ti" else ("bf16",)
    )


AMP_SLOW = [
    *((p, AMP_IMG, ("fp16",)) for p in SPECS if p.stem in AMP_FAMILIES and p.stem != "deit_ti"),
    *((p, AMP_IMG, tuple(AMP)) for p in HYBRIDS),
    *((p, IMG, tuple(AMP)) for p in SPECS if p.stem in AMP_FAMILIES),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "img", "amps"), AMP_SLOW, ids=[f"{p.stem}@{i}-{'-'.join(a)}" for p, i, a in AMP_SLOW])
def test_autocast_activation_bytes_fp16_hybrids_and_at_224(path: Path, img: int, amps: tuple[str, ...]) -> None:
    assert_autocast_exact(path, img, amps)


def test_autocast_keeps_float32_weights_gradients_and_optimizer_state() -> None:
    """--amp: after a real AdamW step with the forward under autocast, parameters, gradients and both moments
    are float32 and their bytes are as counted; the activations are what changes."""
    (path,) = [p for p in SPECS if p.stem == "deit_ti_distilled"]
    model = factory(path)(img_size=AMP_IMG).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(1, 3, AMP_IMG, AMP_IMG)).float().sum()
    loss.backward()
    opt.step()
    fp = ir_of(path).memory(AMP_IMG, 1, amp="bf16")
    plain = ir_of(path).memory(AMP_IMG, 1)
    params = sum(p.nbytes for p in model.parameters())
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    assert {p.grad.dtype for p in model.parameters()} == {torch.float32}, "gradients are float32 under autocast"
    assert (fp.params_bytes, fp.grads_bytes, fp.optimizer_bytes) == (params, grads, optimizer_state_bytes(opt))
    assert (fp.params_bytes, fp.grads_bytes, fp.optimizer_bytes) == (
        plain.params_bytes,
        plain.grads_bytes,
        plain.optimizer_bytes,
    )
    assert (fp.dtype, fp.amp, plain.amp) == ("float32", "bf16", None)
    with pytest.raises(ValueError, match="float32 module"):
        ir_of(path).memory(AMP_IMG, 1, "bfloat16", amp="bf16")


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.nbytes for state in opt.state.values() for t in state.values() if isinstance(t, torch.Tensor))


SMALL = ["deit_ti_distilled", "cait_xxs24", "ceit_t", "deepvit_s", "volo_d1", "vit_b16_sincos"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("name", SMALL)
def test_weights_gradients_and_optimizer_state(name: str, optimizer: str) -> None:
    """After one real training step: parameter, gradient and optimizer-state bytes as counted (at 64 px, where
    the position tables are smaller; AdamW in bfloat16, SGD in float32)."""
    (path,) = [p for p in SPECS if p.stem == name]
    dtype, img = ("bfloat16" if optimizer == "adamw" else "float32"), 64
    model = factory(path)(img_size=img).to(DTYPES[dtype]).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    else:
        opt = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
    model(torch.randn(1, 3, img, img, dtype=DTYPES[dtype])).float().sum().backward()
    opt.step()
    fp = ir_of(path).memory(img, 1, dtype, optimizer=optimizer)
    params = sum(p.nbytes for p in model.parameters())
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    assert (fp.params_bytes, fp.grads_bytes) == (params, grads), f"{name}: (params, grads) bytes"
    assert fp.optimizer_bytes == optimizer_state_bytes(opt), f"{name} {optimizer}: optimizer state bytes"


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_parameter_tensors_and_frozen_parameters(path: Path) -> None:
    """Per-tensor optimizer state needs the number of trainable tensors; frozen ones take no gradient."""
    with torch.device("meta"):
        model = factory(path)(img_size=IMG)
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = ir_of(path).count(IMG)
    assert total.tensors == len(trainable), f"{path.stem}: trainable parameter tensors"
    assert total.trainable == sum(p.numel() for p in trainable), f"{path.stem}: trainable parameters"


def _module(ir: IR) -> list[torch.nn.Parameter]:
    with torch.device("meta"):
        return list(factory(next(p for p in SPECS if p.stem == ir.spec.name))(img_size=IMG).parameters())


def test_steps_add_up_and_scale_with_batch() -> None:
    ir = ir_of(next(p for p in SPECS if p.stem == "cait_xxs24"))
    fp = ir.memory(IMG, 4, "float32")
    assert sum(s.activation_bytes for s in fp.steps) == fp.activation_bytes
    assert sum(s.params for s in fp.steps) * 4 == fp.params_bytes == sum(p.numel() for p in _module(ir)) * 4
    assert sum(total for _, _, total in fp.by_kind()) == sum(s.activation_bytes for s in fp.steps if s.per_block)
    assert [(kind, blocks) for kind, blocks, _ in fp.by_kind()] == [
        ("talking_heads + mlp (LayerScale)", 24),
        ("class_attention + mlp (cls only, LayerScale)", 2),
    ]
    # everything but the float32 log-sum-exp of attention is in the activation dtype
    half = ir.memory(IMG, 4, "bfloat16")
    assert fp.activation_bytes / 2 < half.activation_bytes < fp.activation_bytes * 0.51


# --- the strided-tensor model against torch --------------------------------------------------------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(shape=shapes, data=st.data())
def test_view_strides_match_torch(shape: list[int], data: st.DataObject) -> None:
    """Permute and slice a tensor, then ask for a view of another shape: fails exactly when torch's does,
    with the same strides when it does not."""
    base = torch.empty(shape)
    perm = data.draw(st.permutations(range(len(shape))))
    t = base.permute(*perm)
    dim = data.draw(st.integers(0, t.ndim - 1))
    step = data.draw(st.integers(1, 2))
    t = t[(slice(None),) * dim + (slice(None, None, step),)]
    new, rest = [], t.numel()
    for _ in range(data.draw(st.integers(0, 3))):
        new.append(data.draw(st.sampled_from([d for d in range(1, rest + 1) if rest % d == 0])))
        rest //= new[-1]
    new.append(rest)
    ours = view_strides(tuple(t.shape), t.stride(), tuple(new))
    try:
        theirs: tuple[int, ...] | None = t.view(*new).stride()
    except RuntimeError:
        theirs = None
    assert ours == theirs, (tuple(t.shape), t.stride(), new)


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(st.integers(1, 3), min_size=4, max_size=4), data=st.data())
def test_conv_and_elementwise_output_layouts_match_torch(shape: list[int], data: st.DataObject) -> None:
    """A convolution's output takes the memory format torch suggests for its input; an elementwise result
    is laid out in the input's dimension order."""
    t = torch.randn(shape).permute(*data.draw(st.permutations(range(4))))
    ours = T(Storage(t.untyped_storage().nbytes()), tuple(t.shape), t.stride(), 4)
    conv = torch.nn.functional.conv2d(t, torch.randn(5, t.shape[1], 1, 1))
    assert _strides(Tape(4).conv2d(ours, 5, 1)) == _strides(conv), (t.shape, t.stride())
    assert _strides(Tape(4).pointwise(ours)) == _strides(t + 1), (t.shape, t.stride())


@settings(max_examples=300, deadline=None)
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=4), data=st.data())
def test_casts_and_elementwise_results_of_strided_inputs_match_torch(shape: list[int], data: st.DataObject) -> None:
    """An input cast for a lower-precision op keeps its strides when dense (a permutation) and is laid out
    densely in its dimension order otherwise (a slice, an expand), as an elementwise result is."""
    t = torch.randn(shape).permute(*data.draw(st.permutations(range(len(shape)))))
    dim = data.draw(st.integers(0, t.ndim - 1))
    t = t[(slice(None),) * dim + (slice(None, None, data.draw(st.integers(1, 2))),)]
    if data.draw(st.booleans()):
        t = t[(slice(None),) * dim + (slice(0, 1),)].expand(*t.shape[:dim], 2, *t.shape[dim + 1 :])
    x = T(Storage(t.untyped_storage().nbytes()), tuple(t.shape), t.stride(), 4)
    assert _strides(x.to(2)) == _strides(t.to(torch.bfloat16)), (tuple(t.shape), t.stride())
    assert x.to(2).storage.nbytes == 2 * t.numel()
    assert _strides(Tape(4).pointwise(x)) == _strides(t * 2), (tuple(t.shape), t.stride())


def _strides(t: T | torch.Tensor) -> tuple[int, ...]:
    """Strides of the dimensions with more than one element (the others' strides never matter)."""
    shape, stride = (t.shape, t.stride) if isinstance(t, T) else (tuple(t.shape), t.stride())
    return tuple(s if n > 1 else 0 for n, s in zip(shape, stride, strict=True))


@pytest.mark.parametrize(
    ("args", "start"),
    [
        ([], ""),  # the whole output
        (["--amp", "bf16", "--img-size", "224"], "memory of one training step"),  # its memory tables
    ],
)
def test_readme_shows_the_real_memory_output(args: list[str], start: str) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    cmd = [sys.executable, "-m", "archgen", "count", "vit_b16", "--memory", "--batch", "64", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = "\n".join(line.rstrip() for line in proc.stdout.splitlines())
    assert start in output, proc.stdout
    assert output[output.index(start) :] in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README: paste the output of " + " ".join(cmd[2:])
    )


def test_count_json_carries_the_memory_of_each_resolution() -> None:
    import json
    import subprocess
    import sys

    from conftest import ROOT

    args = ["count", "cait_xxs24", "--memory", "--batch", "2", "--dtype", "bfloat16", "--optimizer", "sgd", "--json"]
    proc = subprocess.run([sys.executable, "-m", "archgen", *args], cwd=ROOT, capture_output=True, text=True)
    counts = json.loads(proc.stdout)["counts"]
    ir = ir_of(next(p for p in SPECS if p.stem == "cait_xxs24"))
    assert [c["img_size"] for c in counts] == [224, 384]
    for entry in counts:
        memory = entry["memory"]
        fp = ir.memory(entry["img_size"], 2, "bfloat16", optimizer="sgd")
        assert (memory["batch"], memory["dtype"], memory["amp"], memory["optimizer"]) == (2, "bfloat16", None, "sgd")
        for key in ("params_bytes", "grads_bytes", "optimizer_bytes", "activation_bytes", "total_bytes"):
            assert memory[key] == getattr(fp, key) and isinstance(memory[key], int), key
        assert sum(s["activation_bytes"] for s in memory["stages"]) == memory["activation_bytes"]


def test_count_amp_json_without_torch() -> None:
    """``count --memory --amp`` answers without importing torch; its JSON says how the step runs."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    args = ["count", "volo_d1", "--img-size", "224", "--memory", "--batch", "2", "--amp", "fp16", "--json"]
    code = (
        "import sys; from archgen.cli import app\n"
        f"try:\n    app({args!r})\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["counts"]
    memory = entry["memory"]
    fp = ir_of(next(p for p in SPECS if p.stem == "volo_d1")).memory(224, 2, amp="fp16")
    assert (memory["dtype"], memory["amp"]) == ("float32", "fp16")
    for key in ("params_bytes", "grads_bytes", "optimizer_bytes", "activation_bytes", "total_bytes"):
        assert memory[key] == getattr(fp, key), key
    assert (
        memory["activation_bytes"]
        != ir_of(next(p for p in SPECS if p.stem == "volo_d1")).memory(224, 2).activation_bytes
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amp", "bf16", "--dtype", "bfloat16"], "error: --amp bf16 keeps the weights in float32"),
        (["--amp", "fp32"], "error: --amp fp32: choose bf16, fp16"),
    ],
)
def test_count_amp_bad_options(args: list[str], message: str) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    cmd = [sys.executable, "-m", "archgen", "count", "deit_ti", "--memory", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert not proc.stdout


def test_sweep_counts_memory_under_amp() -> None:
    """``sweep --batch B --amp fp16``: the row that leaves deit_ti as it is has deit_ti's --amp footprint."""
    from archgen import specs
    from archgen.sweep import Budget, MemorySetting, sweep

    setting = MemorySetting(batch=2, amp="fp16")
    result = sweep(specs.load(specs.find("deit_ti")), ["stem.dim=192,384"], None, Budget(), setting)
    (row,) = [r for r in result.rows if r.values == (192,)]
    fp = ir_of(next(p for p in SPECS if p.stem == "deit_ti")).memory(result.img_size, 2, amp="fp16")
    assert (row.memory_bytes, row.activation_bytes) == (fp.total_bytes, fp.activation_bytes)
    assert result.as_dict()["memory"]["amp"] == "fp16"
