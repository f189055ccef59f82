#!/usr/bin/env python3
"""Recipe: data-parallel training of a generated archgen model with FSDP2, activation checkpointing and
per-block ``torch.compile``, on CPU processes that talk over gloo.

Two processes on this machine; the script spawns them itself, and their rendezvous store listens on
127.0.0.1 only, on a port the OS picks::

    python3 examples/fsdp_train.py deit_ti --nproc 2 --img-size 64 --num-classes 10 --steps 5

or launched by torchrun (whose own store listens on every interface at --master-port)::

    GLOO_SOCKET_IFNAME=lo torchrun --nproc-per-node 2 --master-addr 127.0.0.1 --master-port 29500 \\
        examples/fsdp_train.py deit_ti --img-size 64 --num-classes 10 --steps 5

Per process:

1. ``generated/<name>.py`` is loaded by file path (only torch is needed, as for torch.hub) and built with the
   same seed on every rank, so every rank starts from the same full weights;
2. activation checkpointing: the model's own ``set_grad_checkpointing(True)`` (why, below at ``prepare``);
3. ``block.compile()`` on every residual block (in place: parameter names, hence checkpoint keys, unchanged);
4. ``fully_shard`` on every block, then on the root (patch embedding, tokens, position table, norm, head);
5. AdamW steps on synthetic data: one global batch per step, each rank training on its own slice of it;
6. ``--save PATH``: the gathered full state dict, whose keys are exactly the unsharded model's, so it loads
   into ``generated/<name>.py``'s model (or torch.hub's) with ``load_state_dict(..., strict=True)``.

BatchNorm (VOLO's conv stem, CeiT's stem and LeFF, DeepViT's re-attention and conv stem) keeps per-rank
batch statistics here: torch's SyncBatchNorm takes GPU tensors only. Those models train, but are not
step-for-step equal to one process on the whole batch, as the LayerNorm-only models are (tests/
test_distributed.py checks that equality on deit_ti).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

GENERATED = Path(__file__).resolve().parent.parent / "generated"
LOOPBACK = "127.0.0.1"

# archgen names every block class after its ops (Block, ReAttentionBlock, TalkingHeadsBlock,
# ClassAttentionBlock, OutlookBlock, LeFFBlock, LCABlock, LayerScaleBlock, ...) and numbers a clash
# (Block2); no other generated class ends in "Block". Matching the class name finds the blocks wherever they
# sit: model.blocks, model.network[i], model.blocks_token_only, model.post_network, model.lca. A rule on
# containers instead ("children of every nn.Sequential") would take VOLO's conv stem apart layer by layer
# and miss CeiT's single LCA block.
BLOCK_CLASS = re.compile(r"Block\d*$")


def load_factory(name: str) -> Callable[..., nn.Module]:
    """``generated/<name>.py``'s factory, loaded by file path (archgen itself need not be installed)."""
    path = GENERATED / f"{name}.py"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in GENERATED.glob("*.py")))
        raise SystemExit(f"no generated model {name!r}; one of: {known}")
    spec = importlib.util.spec_from_file_location(f"archgen_generated_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that its classes pickle and inspect like any imported module's
    spec.loader.exec_module(module)
    return getattr(module, name)


def build_model(name: str, img_size: int, num_classes: int, seed: int = 0, **kwargs: float) -> nn.Module:
    torch.manual_seed(seed)  # the same full weights on every rank, before any sharding
    return load_factory(name)(img_size=img_size, num_classes=num_classes, **kwargs)


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks: modules whose class name ends in Block (optionally numbered), outermost only
    (a block is never split between FSDP units), in declaration order, which is every generated model's
    forward order."""
    blocks: list[nn.Module] = []
    inside: set[str] = set()
    for path, module in model.named_modules():
        if any(path.startswith(prefix + ".") for prefix in inside):
            continue
        if BLOCK_CLASS.search(type(module).__name__):
            blocks.append(module)
            inside.add(path)
    if not blocks:
        raise ValueError(f"{type(model).__name__}: no module whose class name ends in 'Block'")
    return blocks


def prepare(model: nn.Module, *, checkpointing: bool = True, compile_blocks: bool = True) -> nn.Module:
    """Activation checkpointing, per-block compile and FSDP2 sharding, in place. Needs a process group.

    Checkpointing is the model's own ``set_grad_checkpointing``: its forward calls
    ``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`` on each block, i.e. checkpoint
    around the sharded (and compiled) block. That composes with fully_shard: on the recomputation in
    backward, FSDP2's pre-forward hook sees that the block is already in its pre-backward state (its
    parameters were all-gathered by the pre-backward hook) and neither gathers nor reshards again (see
    ``_pre_forward`` in torch/distributed/fsdp/_fully_shard/_fsdp_state.py). No wrapper module is inserted
    (``checkpoint_wrapper`` would add ``_checkpoint_wrapped_module`` to every parameter path, which state_dict
    hooks then have to strip), so the module tree is the one the checkpoint layout names. And the checkpoint
    sits outside the compiled call, so the recomputation simply runs the compiled block again, with no
    checkpoint for torch.compile to trace.

    ``block.compile()`` compiles each block's call in place (``torch.compile(block)`` would return a
    wrapper and prefix every key with ``_orig_mod.``). Blocks of one class share one compiled graph (deit_ti:
    12 blocks, 1 graph), and FSDP2's all-gather and reduce-scatter hooks run eagerly around it: they are
    marked as not to be traced by dynamo.
    """
    blocks = find_blocks(model)
    if checkpointing:
        model.set_grad_checkpointing(True)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in blocks:
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the root: every parameter outside the blocks
    return model


def synthetic_batch(
    step: int, global_batch: int, img_size: int, num_classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch of one step (the same on every rank; each rank takes its slice)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    images = torch.randn(global_batch, 3, img_size, img_size, generator=gen)
    labels = torch.randint(0, num_classes, (global_batch,), generator=gen)
    return images, labels


def rank_slice(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    per_rank = tensor.shape[0] // world_size
    return tensor[rank * per_rank : (rank + 1) * per_rank]


def loss_fn(output: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; a distilled model's two training heads (no teacher here) each get the labels."""
    outputs = output if isinstance(output, tuple) else (output,)
    return sum(F.cross_entropy(o, labels) for o in outputs) / len(outputs)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """One optimizer step on this rank's slice; returns the local loss. FSDP2 averages the gradients over
    ranks in backward (reduce-scatter), so with equal slices the step is that of the mean loss over the
    whole batch."""
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer gathered to full tensors, under the unsharded model's keys (a collective:
    every rank calls it)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _use_loopback_for_gloo() -> None:
    # gloo otherwise picks the interface the host name resolves to, which may be unreachable (containers)
    # or not the loopback; pin it to the loopback unless the caller chose one.
    if "GLOO_SOCKET_IFNAME" not in os.environ and any(name == "lo" for _, name in socket.if_nameindex()):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"


def _loopback_store(rank: int, world_size: int, ports: Queue, timeout: timedelta) -> dist.TCPStore:
    """The rendezvous store, listening on 127.0.0.1 only. Rank 0 binds a socket to (127.0.0.1, 0): the OS
    picks a free port, and since the socket stays bound and is handed to the store, no other process can
    take the port in between (a probe-then-close port would be racy). c10d's own store, as with
    ``init_method="tcp://..."``, would listen on every interface."""
    if rank == 0:
        listener = socket.create_server((LOOPBACK, 0))
        port = listener.getsockname()[1]
        for _ in range(world_size - 1):
            ports.put(port)
        fd = listener.detach()  # the store owns (and closes) the listening socket from here
        return dist.TCPStore(LOOPBACK, port, world_size, is_master=True, timeout=timeout, master_listen_fd=fd)
    port = ports.get(timeout=timeout.total_seconds())
    return dist.TCPStore(LOOPBACK, port, world_size, is_master=False, timeout=timeout)


def _spawned(rank: int, fn: Callable[..., Any], world_size: int, ports: Queue, timeout_s: float, args: tuple) -> None:
    _use_loopback_for_gloo()
    # each process gets its share of the cores: world_size processes x all cores each would oversubscribe
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    timeout = timedelta(seconds=timeout_s)
    store = _loopback_store(rank, world_size, ports, timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timeout)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], world_size: int, args: tuple = (), timeout_s: float = 600.0) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes (spawn, not fork: no inherited
    threads or torch state) joined by gloo over 127.0.0.1. A worker's exception is raised here with its
    traceback (the other workers are then stopped); after ``timeout_s`` the workers are killed and
    TimeoutError is raised."""
    import torch.multiprocessing as mp

    ports = mp.get_context("spawn").Queue()  # rank 0 tells the others the port its store listens on
    context = mp.start_processes(
        _spawned,
        args=(fn, world_size, ports, timeout_s, args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=5.0):  # raises ProcessRaisedException/ProcessExitedException on failure
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise TimeoutError(f"{world_size} workers still running after {timeout_s:.0f} s")


def train(rank: int, world_size: int, opts: argparse.Namespace) -> None:
    """The recipe's training loop (one process)."""
    model = build_model(opts.model, opts.img_size, opts.num_classes, seed=opts.seed)
    reference_keys = list(model.state_dict())  # the checkpoint layout, before sharding
    prepare(model, checkpointing=not opts.no_checkpointing, compile_blocks=not opts.no_compile)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.05)
    global_batch = opts.batch_size * world_size
    for step in range(opts.steps):
        images, labels = synthetic_batch(step, global_batch, opts.img_size, opts.num_classes, seed=opts.seed)
        start = time.perf_counter()
        loss = train_step(model, optimizer, rank_slice(images, rank, world_size), rank_slice(labels, rank, world_size))
        dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        if rank == 0:
            print(f"step {step}: loss {loss.item():.4f}  {time.perf_counter() - start:.2f} s", flush=True)
    state = full_state_dict(model)
    assert list(state) == reference_keys, "gathered state dict keys differ from the unsharded model's"
    if rank == 0 and opts.save:
        torch.save(state, opts.save)
        print(f"saved {len(state)} tensors to {opts.save}", flush=True)


def _under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("model", help="a generated model, e.g. deit_ti (generated/<model>.py)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4, help="per rank")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="keep the blocks eager")
    parser.add_argument("--no-checkpointing", action="store_true", help="keep every activation")
    parser.add_argument("--nproc", type=int, default=2, help="processes to spawn when not under torchrun")
    parser.add_argument("--save", type=Path, help="write the gathered full state dict here (rank 0)")
    opts = parser.parse_args(argv)
    load_factory(opts.model)  # a misspelt name fails here, before any process starts
    if _under_torchrun():
        _use_loopback_for_gloo()
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])))
        dist.init_process_group("gloo")  # env:// from torchrun
        try:
            train(dist.get_rank(), dist.get_world_size(), opts)
        finally:
            dist.destroy_process_group()
    else:
        spawn(train, opts.nproc, args=(opts,))


if __name__ == "__main__":
    sys.exit(main())
