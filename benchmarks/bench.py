"""Latency of generated modules against their references on the same weights: inference, and a training
step (forward + backward).

    python benchmarks/bench.py deit_s cait_xxs24 volo_d1                      # CPU, 2 threads
    python benchmarks/bench.py ceit_t --baseline /tmp/old/generated           # against another build
    python benchmarks/bench.py deit_s --device cuda --dtype bfloat16 --batch 64 --train-batch 64

The reference is timm's model where the spec names one; otherwise (``--baseline DIR``) the module of the
same name in another folder of generated files, e.g. those of an earlier commit
(``git worktree add /tmp/old <rev>``), so a change to the compiler can be timed against the code it
replaces. Runs are interleaved (ours, reference, ours, ...) so that drift in machine load hits both alike;
the table reports medians and the ratio ours / reference (below 1 = generated module faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archgen import specs  # noqa: E402
from archgen.compiler import resolve  # noqa: E402


def generated(name: str, folder: Path = ROOT / "generated") -> Callable[..., torch.nn.Module]:
    spec = importlib.util.spec_from_file_location(f"bench_{folder.name}_{name}", folder / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], object], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def inference(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def step() -> object:
        with torch.inference_mode():
            return model(x)

    return step


def training(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One forward and backward (a distilled model's two heads both reach the loss); gradients are freed
    after each step, as an optimiser's zero_grad(set_to_none=True) would."""

    def step() -> object:
        out = model(x)
        loss = sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,)))
        loss.backward()
        for p in model.parameters():
            p.grad = None
        return loss

    return step


def reference(name: str, ir: object, baseline: Path | None) -> tuple[torch.nn.Module | None, str]:
    ref = ir.spec.reference  # type: ignore[attr-defined]
    if ref is not None and ref.package == "timm":
        import timm

        model = timm.create_model(ref.model, pretrained=False, num_classes=ir.spec.num_classes)  # type: ignore[attr-defined]
        return model, f"timm {ref.model}"
    if baseline is not None and (baseline / f"{name}.py").is_file():
        return generated(name, baseline)(), f"{baseline}/{name}.py"
    return None, "no reference"


def compare(ours: torch.nn.Module, ref: torch.nn.Module | None, steps: Callable, x: torch.Tensor, args) -> str:
    mine_step = steps(ours, x)
    ref_step = steps(ref, x) if ref is not None else None
    for _ in range(2):  # warm-up
        mine_step()
        if ref_step is not None:
            ref_step()
    mine, theirs = [], []
    for _ in range(args.reps):
        mine.append(timed(mine_step, args.device))
        if ref_step is not None:
            theirs.append(timed(ref_step, args.device))
    t_ours = statistics.median(mine)
    if not theirs:
        return f"{t_ours * 1e3:.1f} | - | -"
    t_ref = statistics.median(theirs)
    return f"{t_ours * 1e3:.1f} | {t_ref * 1e3:.1f} | {t_ours / t_ref:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, nargs="*", default=[8], help="training-step batch sizes")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--baseline", type=Path, help="folder of generated files to time against (no timm model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"device {args.device}, {args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | reference | step | batch | generated ms | reference ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names:
        ir = resolve(specs.load(ROOT / "specs" / f"{name}.yaml"))
        size = ir.spec.img_size
        torch.manual_seed(0)
        ours = generated(name)()
        ref, label = reference(name, ir, args.baseline)
        if ref is not None:
            ours.load_state_dict(ref.state_dict(), strict=True)
            ref = ref.to(args.device, dtype)
        ours = ours.to(args.device, dtype)
        runs = [("inference", b, inference) for b in args.batch] + [("train", b, training) for b in args.train_batch]
        for mode, batch, steps in runs:
            for model in (ours, ref):
                if model is not None:
                    model.train(mode == "train")
            x = torch.randn(batch, ir.spec.in_chans, *size, device=args.device, dtype=dtype)
            print(f"| {name} | {label} | {mode} | {batch} | {compare(ours, ref, steps, x, args)} |", flush=True)


if __name__ == "__main__":
    main()
