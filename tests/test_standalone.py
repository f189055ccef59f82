"""Each generated file works where archgen cannot be imported (one subprocess runs them all)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_health import SMALLEST

from conftest import LARGE, ROOT, SPECS, ir_of

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, importlib.util, json, sys

    class NoArchgen(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "archgen" or name.startswith("archgen."):
                raise ImportError("archgen is not installed here")

    sys.meta_path.insert(0, NoArchgen())
    try:
        import archgen  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("archgen is importable; the test would prove nothing")

    import torch

    results = {}
    for name, path, size, chans, big in json.loads(sys.argv[1]):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        device = "meta" if big else "cpu"
        with torch.device(device):
            model = getattr(module, name)(num_classes=7).eval()
        with torch.no_grad():
            out = model(torch.randn(1, chans, *size, device=device))
        results[name] = list(out.shape)
    print(json.dumps(results))
    """
)


# One file per family runs in the subprocess (the smallest; a CPU forward of every model took 115 s); what makes a
# file need archgen is an import, and every file's imports are checked below.
RUN = SMALLEST
# Imports a generated file may make: torch and the standard library at the top; the weights path imports the hub
# client and safetensors where it runs (pretrained=True), so a file imports without them.
TOP = ("torch",)
LAZY = ("huggingface_hub", "safetensors")


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(top-level, inside functions) imported module roots of a parsed file."""
    top, lazy = set(), set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        names += [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        (top if node in tree.body else lazy).update(n.split(".")[0] for n in names)
    return top, lazy


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_generated_file_imports_torch_and_the_standard_library_only(path: Path) -> None:
    tree = ast.parse((ROOT / "generated" / f"{path.stem}.py").read_text(encoding="utf-8"))
    top, lazy = _imports(tree)
    stdlib = sys.stdlib_module_names | {"__future__"}
    assert top <= stdlib | set(TOP), f"{path.stem}: imports {sorted(top - stdlib - set(TOP))} at the top"
    assert lazy <= stdlib | set(TOP) | set(LAZY), f"{path.stem}: imports {sorted(lazy - stdlib - set(TOP))}"


def test_generated_files_run_without_archgen() -> None:
    jobs = []
    for path in RUN:
        ir = ir_of(path)
        size = ir.spec.img_size
        big = ir.count(size).params > LARGE
        jobs.append([path.stem, str(ROOT / "generated" / f"{path.stem}.py"), size, ir.spec.in_chans, big])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(jobs)], capture_output=True, text=True, cwd="/", timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shapes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shapes == {path.stem: [1, 7] for path in RUN}


def test_torch_hub_loads_from_a_local_clone_without_archgen() -> None:
    code = textwrap.dedent(
        f"""
        import sys, torch
        model = torch.hub.load({str(ROOT)!r}, "deit_ti", source="local", num_classes=5).eval()
        assert not any(m == "archgen" or m.startswith("archgen.") for m in sys.modules), "archgen was imported"
        with torch.no_grad():
            print(tuple(model(torch.randn(1, 3, 224, 224)).shape))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "(1, 5)"


def test_torch_hub_lists_exactly_the_generated_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.hub

    # torch.hub.list has no source="local"; point its repository lookup at this clone and let it list
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(ROOT))
    listed = torch.hub.list("local/archgen", trust_repo=True)
    assert sorted(listed) == sorted(p.stem for p in (ROOT / "generated").glob("*.py"))
    assert sorted(listed) == [p.stem for p in SPECS]
