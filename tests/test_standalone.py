"""Each generated file works where archgen cannot be imported (one subprocess runs them all)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import LARGE, ROOT, SPECS, ir_of, size_variant

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


# Size variants are the same templates with other numbers (their files are checked by test_golden and on meta).
RUN = [p for p in SPECS if not size_variant(p.stem)]


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
