"""Analytic training memory against what a CUDA device allocates, at bfloat16 (a benchmark, not a test:
``archgen count --memory`` is exact for torch on CPU, where ``tests/test_memory.py`` checks every spec).

    python benchmarks/memory_cuda.py deit_s cait_xxs24 volo_d1 ceit_t deepvit_s --batch 64

For each spec, after one warm-up step (cuBLAS workspaces, AdamW state), a second training step measures:
- weights: ``memory_allocated()`` taken by the model (against ``params_bytes``; BatchNorm buffers of CeiT and
  VOLO come on top);
- saved activations: what the forward leaves allocated, less its logits (against ``activation_bytes``);
- the step's peak: ``max_memory_allocated()`` over forward, backward and ``optimizer.step()``, against the
  analytic total (params + grads + AdamW state + activations).

Where CUDA kernels keep other tensors than CPU ones (the reason measured and analytic can differ here):
- LayerNorm keeps its mean and rstd in float32 for a bfloat16 input (CPU keeps them in bfloat16);
- fused attention: flash attention keeps its log-sum-exp in float32 like CPU's, plus a random-number
  seed and offset; the memory-efficient kernel pads the log-sum-exp rows to a multiple of 32;
- the caching allocator rounds every block up to 512 bytes (small tensors such as statistics grow most);
- backward's peak holds gradients and the activations not yet freed at once, and AdamW's foreach step
  allocates temporaries, so the peak is not the plain sum.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archgen import specs  # noqa: E402
from archgen.build import compile_path  # noqa: E402

MIB = 2**20


def load_factory(name: str) -> Callable[..., torch.nn.Module]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "generated" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def measure(name: str, batch: int, checkpointing: bool) -> dict[str, int]:
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    model = load_factory(name)().to("cuda", torch.bfloat16).train()
    model.set_grad_checkpointing(checkpointing)
    weights = torch.cuda.memory_allocated() - base
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, *model.img_size, device="cuda", dtype=torch.bfloat16)
    target = torch.randint(0, 1000, (batch,), device="cuda")
    out = {"weights": weights}
    for measured in (False, True):  # a warm-up step first: cuBLAS workspaces, AdamW state
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        logits = model(x)
        # what the forward left allocated, less its logits, plus the image (allocated earlier; autograd saves it)
        saved = torch.cuda.memory_allocated() - before - logits.untyped_storage().nbytes() + x.nbytes
        torch.nn.functional.cross_entropy(logits.float(), target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if measured:
            out |= {"saved": saved, "peak": torch.cuda.max_memory_allocated() - base}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=["deit_s", "cait_xxs24", "volo_d1", "ceit_t", "deepvit_s"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, bfloat16")
    print(
        f"{'spec':14} {'weights MiB':>22} {'saved activations MiB':>26} {'step peak vs total MiB':>26}\n"
        f"{'':14} {'ours / measured':>22} {'ours / measured (ratio)':>26} {'ours / measured (ratio)':>26}"
    )
    for name in args.names:
        ir = compile_path(specs.find(name))
        fp = ir.memory(ir.spec.img_size, args.batch, "bfloat16", args.checkpointing, "adamw")
        got = measure(name, args.batch, args.checkpointing)
        print(
            f"{name:14} {fp.params_bytes / MIB:>10.1f} / {got['weights'] / MIB:<10.1f}"
            f" {fp.activation_bytes / MIB:>9.1f} / {got['saved'] / MIB:.1f} ({got['saved'] / fp.activation_bytes:.3f})"
            f"   {fp.total_bytes / MIB:>9.1f} / {got['peak'] / MIB:.1f} ({got['peak'] / fp.total_bytes:.3f})"
        )


if __name__ == "__main__":
    main()
