"""The FSDP2 recipe (examples/fsdp_train.py) on two CPU processes over gloo against one process on the whole
batch: the same losses, gradients and weights after two optimizer steps, and the unsharded checkpoint layout.

Setting: deit_ti at 32x32 (4 patches + the class token), 10 classes, 2 images per rank, no dropout or
stochastic depth, SGD with momentum. deit_ti has LayerNorm only, so data parallelism is exactly one process on
the concatenated batch up to float32 rounding (a BatchNorm model would see per-rank batch statistics).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import ALL, ROOT, factory, ir_of

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

# The recipe is a script, not a package: import it by its folder, which spawned workers inherit in sys.path.
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))
fsdp_train: Any = importlib.import_module("fsdp_train")

NAME, IMG, CLASSES = "deit_ti", 32, 10
# no randomness in the forward: dropout and stochastic depth off (the defaults, stated so they stay off)
NO_DROP = {"drop_rate": 0.0, "attn_drop_rate": 0.0, "proj_drop_rate": 0.0, "drop_path_rate": 0.0}
WORLD, PER_RANK, STEPS = 2, 2, 2
# |sharded - single| <= RTOL x max |single| per tensor. Sharding changes only the order of float32 sums:
# each rank's weight gradients sum 2 samples, the reduce-scatter then sums (and halves) the two ranks', where
# one process sums 4; matmuls over 2 rows instead of 4 may block differently. Each such sum is exact to a
# few float32 ulps (6e-8) of its magnitude; 1e-5 leaves two orders of magnitude for the compiled case, whose
# fused kernels also reorder LayerNorm and softmax sums; a wrong gradient scale (a sum instead of a mean
# over ranks) or a missed shard is off by O(1).
RTOL = 1e-5
TIMEOUT_S = 300.0  # the whole 2-process run; it takes 5-15 s


def _optimizer(params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    # SGD is linear in the gradients, so the second step compares the sharded run's arithmetic. (Adam's
    # first step moves every weight by lr x sign(grad): a gradient within rounding of zero could flip sign
    # and move a weight by 2 lr, which is not a sharding error.)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    return fsdp_train.synthetic_batch(step, WORLD * PER_RANK, IMG, CLASSES)


def _worker(rank: int, world_size: int, init: Path, out: Path, compile_blocks: bool) -> None:
    """One rank: the recipe's model, prepare() and train_step(); gradients gathered before each step."""
    import torch._dynamo.utils
    from torch.distributed.fsdp import FSDPModule

    model = fsdp_train.build_model(NAME, IMG, CLASSES, **NO_DROP)
    model.load_state_dict(torch.load(init))
    keys_before = list(model.state_dict())
    first_block_calls: list[int] = []
    if not compile_blocks:  # (a Python hook inside a compiled call would be traced, not counted)
        model.blocks[0].register_forward_pre_hook(lambda *_: first_block_calls.append(1))
    fsdp_train.prepare(model, checkpointing=True, compile_blocks=compile_blocks)
    model.train()
    units = sum(isinstance(m, FSDPModule) for m in model.modules())
    local = {n: (p.to_local().numel(), p.numel(), p.shape[0], type(p).__name__) for n, p in model.named_parameters()}
    optimizer = _optimizer(model.parameters())
    grads: list[dict[str, torch.Tensor]] = []

    def gather_grads(*_: object) -> None:  # full_tensor() is a collective: every rank runs it
        grads.append({n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None})

    optimizer.register_step_pre_hook(gather_grads)
    losses = []
    for step in range(STEPS):
        images, labels = (fsdp_train.rank_slice(t, rank, world_size) for t in _batch(step))
        losses.append(fsdp_train.train_step(model, optimizer, images, labels).item())
    state = fsdp_train.full_state_dict(model)
    result = {
        "losses": losses,
        "local": local,
        "keys_before": keys_before,
        "graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "units": units,
        "first_block_calls": len(first_block_calls),
        "grads": grads if rank == 0 else None,  # full tensors: the same on every rank
        "state": state if rank == 0 else None,
    }
    torch.save(result, out / f"rank{rank}.pt")


def _single_process(init: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The reference, computed without the recipe: one eager model, the whole batch, a plain loop."""
    model = fsdp_train.build_model(NAME, IMG, CLASSES, **NO_DROP)
    model.load_state_dict(init)
    model.train()
    optimizer = _optimizer(model.parameters())
    losses, grads = [], []
    for step in range(STEPS):
        images, labels = _batch(step)
        logits = model(images)
        halves = [slice(r * PER_RANK, (r + 1) * PER_RANK) for r in range(WORLD)]
        losses.append([nn.functional.cross_entropy(logits[s], labels[s]).item() for s in halves])
        nn.functional.cross_entropy(logits, labels).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"losses": losses, "grads": grads, "state": model.state_dict()}


def _max_rel_diff(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """max over tensors of max |ours - ref| / max |ref|, and the tensor where it occurs."""
    worst, where = 0.0, ""
    for name, r in ref.items():
        d = (ours[name].double() - r.double()).abs().max().item() / max(r.abs().max().item(), 1e-12)
        if d > worst:
            worst, where = d, name
    return worst, where


@pytest.mark.parametrize("compile_blocks", [False, True], ids=["eager", "compiled"])
def test_fsdp_matches_one_process(compile_blocks: bool, tmp_path: Path) -> None:
    init = fsdp_train.build_model(NAME, IMG, CLASSES, seed=1, **NO_DROP).state_dict()
    torch.save(init, tmp_path / "init.pt")
    fsdp_train.spawn(_worker, WORLD, args=(tmp_path / "init.pt", tmp_path, compile_blocks), timeout_s=TIMEOUT_S)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    ref = _single_process(init)

    # really sharded: every parameter a DTensor split by rows across the ranks, nothing lost or duplicated
    for name, (_, full, rows, kind) in ranks[0]["local"].items():
        assert kind == "DTensor", f"{name} is a {kind}, not sharded"
        held = [r["local"][name][0] for r in ranks]
        assert sum(held) == full, f"{name}: ranks hold {held} of {full}"
        assert rows < WORLD or max(held) < full, f"{name}: one rank holds all {full} of {rows} rows"
    assert ranks[0]["units"] == _expected_blocks(ROOT / "specs" / f"{NAME}.yaml") + 1  # the blocks and the root
    assert ranks[0]["graphs"] == (1 if compile_blocks else 0)  # 12 blocks of one class: one compiled graph
    if not compile_blocks:  # checkpointing is on: each block runs again in backward to recompute activations
        assert ranks[0]["first_block_calls"] == 2 * STEPS

    # each rank's loss is the reference's loss on that rank's half of the batch
    for step in range(STEPS):
        for r in range(WORLD):
            ours, theirs = ranks[r]["losses"][step], ref["losses"][step][r]
            assert abs(ours - theirs) <= RTOL * abs(theirs), f"step {step} rank {r}: loss {ours} vs {theirs}"

    # gradients gathered to full tensors: the mean over the whole batch, every parameter
    for step in range(STEPS):
        grads = ranks[0]["grads"][step]
        assert grads.keys() == ref["grads"][step].keys()
        worst, where = _max_rel_diff(grads, ref["grads"][step])
        assert worst <= RTOL, f"step {step}: gradient of {where} off by {worst:.3g} of its scale"

    # the gathered state dict: the unsharded model's keys in its order (the reference checkpoint layout),
    # and its values after the two steps
    state = ranks[0]["state"]
    assert list(state) == ranks[0]["keys_before"] == list(ref["state"])
    worst, where = _max_rel_diff(state, ref["state"])
    assert worst <= RTOL, f"weights of {where} off by {worst:.3g} of their scale after {STEPS} steps"
    fresh = factory(ROOT / "specs" / f"{NAME}.yaml")(img_size=IMG, num_classes=CLASSES)
    fresh.load_state_dict(state, strict=True)  # loads into the plain generated module


def test_recipe_command_line(tmp_path: Path) -> None:
    """The README's command without torchrun: the script spawns 2 ranks itself, eager blocks, --save."""
    saved = tmp_path / "full.pt"
    recipe = [sys.executable, str(ROOT / "examples" / "fsdp_train.py"), NAME, "--nproc", str(WORLD)]
    options = ["--img-size", str(IMG), "--num-classes", str(CLASSES), "--batch-size", str(PER_RANK), "--steps", "2"]
    cmd = [*recipe, *options, "--no-compile", "--save", str(saved)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("step")] == ["0:", "1:"]
    state = torch.load(saved)
    initial = fsdp_train.build_model(NAME, IMG, CLASSES, **NO_DROP).state_dict()  # the recipe's seed-0 weights
    assert list(state) == list(initial)
    factory(ROOT / "specs" / f"{NAME}.yaml")(img_size=IMG, num_classes=CLASSES).load_state_dict(state, strict=True)
    unchanged = [k for k, v in initial.items() if v.equal(state[k])]
    assert not unchanged, f"two AdamW steps left {unchanged} untouched"


def _expected_blocks(path: Path) -> int:
    """Residual blocks by the spec: depth per block stage, one per layer-wise class-attention stage."""
    stages = ir_of(path).spec.stages
    return sum(s.depth for s in stages if s.kind == "blocks") + sum(1 for s in stages if s.kind == "lca")


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_find_blocks(path: Path) -> None:
    with torch.device("meta"):
        model = factory(path)()
    blocks = fsdp_train.find_blocks(model)
    assert len(blocks) == _expected_blocks(path)
    # every parameter belongs to at most one block (FSDP units must not overlap)
    owned = [id(p) for b in blocks for p in b.parameters()]
    assert len(owned) == len(set(owned))
