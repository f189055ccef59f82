"""Forward latency of generated modules against their reference implementations, on the same weights.

    python benchmarks/bench.py deit_s cait_xxs24 volo_d1 ceit_t deepvit_s          # CPU, 2 threads
    python benchmarks/bench.py deit_s --device cuda --dtype bfloat16 --batch 64      # throughput on a GPU

Runs are interleaved (ours, reference, ours, ...) so that drift in machine load hits both alike; the
table reports medians, the ratio ours / reference (below 1 = generated module faster) and the fraction
of the machine's measured matmul peak that each module reaches (2 x MACs per image).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archgen import specs  # noqa: E402
from archgen.compiler import resolve  # noqa: E402


def generated(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "generated" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(model: torch.nn.Module, x: torch.Tensor, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    model(x)
    sync(device)
    return time.perf_counter() - start


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best of ``reps`` square matmuls, in FLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(timed(lambda t: t @ b, a, device) for _ in range(reps))  # type: ignore[arg-type]
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    peak = matmul_peak(args.device, dtype)
    print(
        f"device {args.device}, {args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print("| model | batch | generated ms | reference ms | ratio | generated % of peak |")
    print("|---|---|---|---|---|---|")
    for name in args.names:
        ir = resolve(specs.load(ROOT / "specs" / f"{name}.yaml"))
        size = ir.spec.img_size
        macs = ir.count(size).macs
        ours = generated(name)().eval()
        ref = None
        reference = ir.spec.reference
        if reference is not None and reference.package == "timm":
            import timm

            ref = timm.create_model(reference.model, pretrained=False, num_classes=ir.spec.num_classes).eval()
            ours.load_state_dict(ref.state_dict(), strict=True)
            ref = ref.to(args.device, dtype)
        ours = ours.to(args.device, dtype)
        for batch in args.batch:
            x = torch.randn(batch, ir.spec.in_chans, size, size, device=args.device, dtype=dtype)
            mine, theirs = [], []
            with torch.inference_mode():
                for _ in range(2):  # warm-up
                    ours(x)
                    if ref is not None:
                        ref(x)
                for _ in range(args.reps):
                    mine.append(timed(ours, x, args.device))
                    if ref is not None:
                        theirs.append(timed(ref, x, args.device))
            t_ours = statistics.median(mine)
            frac = 2 * macs * batch / t_ours / peak
            if theirs:
                t_ref = statistics.median(theirs)
                cells = f"{t_ref * 1e3:.1f} | {t_ours / t_ref:.3f}"
            else:
                cells = "no pip reference | -"
            print(f"| {name} | {batch} | {t_ours * 1e3:.1f} | {cells} | {frac:.1%} |")


if __name__ == "__main__":
    main()
