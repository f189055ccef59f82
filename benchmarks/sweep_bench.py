"""Time ``archgen sweep`` over 10,000 DeiT-S shapes (depth x width x heads x MLP ratio), in a fresh process as
a user runs it: counts only, then with training memory at a batch size.

    python benchmarks/sweep_bench.py            # prints wall time, combinations, valid rows, frontier size

No torch is imported (the check is in the output). The README's "Cost model" section quotes these numbers.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

AXES = [
    "stages.blocks.depth=1..25",  # 25
    "stem.dim=64..1024:64",  # 16
    "stages.blocks.heads=2,3,4,6,8",  # 5 (3 and 6 divide only some widths)
    "stages.blocks.mlp_ratio=1,2,3,4,5",  # 5
]
CHECK = (
    "import sys, runpy; sys.argv = sys.argv[1:]\n"
    "try:\n    runpy.run_module('archgen', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "assert 'torch' not in sys.modules, 'torch was imported'\n"
)


def run(extra: list[str]) -> tuple[float, dict]:
    args = ["archgen", "sweep", "deit_s", *(a for axis in AXES for a in ("--set", axis)), "--json", *extra]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout)


def main() -> None:
    runs = (("counts", []), ("counts + memory (batch 64, bf16)", ["--batch", "64", "--dtype", "bfloat16"]))
    for label, extra in runs:
        times, data = [], {}
        for _ in range(3):
            seconds, data = run(extra)
            times.append(seconds)
        frontier = sum(r["frontier"] for r in data["rows"])
        print(
            f"{label}: {data['combinations']:,} combinations, {data['valid']:,} valid, {frontier} on the frontier; "
            f"wall {statistics.median(times):.2f} s (median of 3, min {min(times):.2f} s), torch not imported"
        )


if __name__ == "__main__":
    main()
