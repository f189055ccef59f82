"""Shared helpers: every spec in specs/ (and the hybrids under tests/hybrids/) compiled once."""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import cache
from pathlib import Path

import pytest

from archgen import specs
from archgen.compiler import IR, resolve
from archgen.emit import emit
from archgen.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
HYBRIDS = sorted((ROOT / "tests" / "hybrids").glob("*.yaml"))
ALL = SPECS + HYBRIDS

# Above this many parameters a module is only ever instantiated on the meta device.
LARGE = 100_000_000


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@cache
def ir_of(path: Path) -> IR:
    return resolve(specs.load(path))


@cache
def source_of(path: Path) -> str:
    (text,) = emit(ir_of(path)).values()
    return text


@cache
def module_of(path: Path) -> types.ModuleType:
    """The generated module: the committed file for specs/, freshly emitted code for hybrids."""
    name = f"archgen_test_generated_{path.stem}"
    committed = ROOT / "generated" / f"{path.stem}.py"
    if path.parent == ROOT / "specs":
        spec = importlib.util.spec_from_file_location(name, committed)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source_of(path), f"<{path.name}>", "exec"), module.__dict__)
    return module


def factory(path: Path):
    return getattr(module_of(path), path.stem)


def resolutions(path: Path) -> list[int]:
    """Default, 384 (or the next size the strides divide, e.g. 392 for /14) and every published one."""
    ir = ir_of(path)
    high = 384
    while True:
        try:
            ir.walk(high)
            break
        except SpecError:
            high += 1
    return sorted({ir.spec.img_size, high} | {p.img_size for p in ir.spec.published})


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    import torch

    torch.manual_seed(0)
