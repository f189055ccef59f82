"""archgen as a tool people install: a non-editable install in a fresh virtual environment works from any
folder on the built-in library, and the README's "own project" example runs as written."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from conftest import ROOT

# one worker of `pytest -n` runs the module: its module-scoped fixture is built once
pytestmark = pytest.mark.xdist_group("install")

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_package_folder_ships() -> None:
    """A new folder of parts must be listed in pyproject.toml, or a wheel would lack it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"archgen"} | {f"archgen.{p.parent.name}" for p in (ROOT / "archgen").glob("*/__init__.py")}
    assert folders <= listed, f"missing from [tool.setuptools] packages: {sorted(folders - listed)}"


def _example() -> tuple[str, list[str]]:
    """The README's worked example: the spec file's text and the commands, as written there."""
    section = README.split("## Use archgen in your own project", 1)[1].split("\n## ", 1)[0]
    spec = re.search(r"`my_specs/deit_s_wide.yaml`:\n\n```yaml\n(.*?)```", section, re.S)
    commands = re.search(r"```bash\n(.*?)```", section, re.S)
    assert spec and commands, "the README's own-project example is missing"
    return spec[1], [line for line in commands[1].splitlines() if line.strip()]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with archgen installed from this checkout, not editable. torch and the other
    dependencies, pip and setuptools among them, are those of the environment running the tests, seen through a
    .pth file: ``venv --system-site-packages`` would reach the base interpreter's packages instead, which inside
    the user's own virtual environment lack torch and may lack a setuptools that builds wheels."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    (site_packages,) = (root / "lib").glob("python*/site-packages")
    outer = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (site_packages / "_archgen_test_outer.pth").write_text("\n".join(outer) + "\n", encoding="utf-8")
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run([*pip, "--ignore-installed", str(ROOT)], timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, f"pip install of the checkout failed: {proc.stderr[-2000:]}"
    return root


def _run(venv: Path, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("ARCHGEN_SPECS", None)
    proc = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    return proc


def test_installed_archgen_is_the_wheel_and_carries_the_library(venv: Path, tmp_path: Path) -> None:
    where = _run(venv, "python -c 'import archgen.specs as s; print(s.__file__); print(s.builtin_dir())'", tmp_path)
    module, library = where.stdout.split()
    assert module.startswith(str(venv)) and library.startswith(str(venv)), where.stdout
    assert sorted(p.name for p in Path(library).glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "specs").glob("*.yaml")
    )


def test_built_in_library_from_any_folder(venv: Path, tmp_path: Path) -> None:
    listed = json.loads(_run(venv, "archgen list --json", tmp_path).stdout)
    assert [row["name"] for row in listed] == sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))
    counted = json.loads(_run(venv, "archgen count volo_d3 --json", tmp_path).stdout)
    assert counted["counts"][0]["params"] == next(r["params"] for r in listed if r["name"] == "volo_d3")
    assert "name: deit_s" in _run(venv, "archgen show deit_s", tmp_path).stdout
    _run(venv, "archgen diagram cait_s24 -o cait.svg", tmp_path)
    assert (tmp_path / "cait.svg").read_text().startswith("<svg")
    _run(venv, "archgen build vit_b16 --out .", tmp_path)
    assert (tmp_path / "generated" / "vit_b16.py").read_bytes() == (ROOT / "generated" / "vit_b16.py").read_bytes()


def test_readme_own_project_example_runs(venv: Path, tmp_path: Path) -> None:
    spec, commands = _example()
    (tmp_path / "my_specs").mkdir()
    (tmp_path / "my_specs" / "deit_s_wide.yaml").write_text(spec, encoding="utf-8")
    outputs = [_run(venv, command, tmp_path).stdout for command in commands]
    built = tmp_path / "my_project" / "generated" / "deit_s_wide.py"
    assert built.read_text().startswith("# Code generated by archgen from my_specs/deit_s_wide.yaml.")
    module_spec = importlib.util.spec_from_file_location("deit_s_wide", built)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    model = module.deit_s_wide()
    counted = json.loads(outputs[0])["counts"][0]
    assert counted["params"] == sum(p.numel() for p in model.parameters())
    assert model.blocks[0].attn.num_heads == 8 and model.num_features == 512  # the child's changes
    assert len(model.blocks) == 12  # the built-in parent's depth
    assert outputs[2].strip().splitlines()[-1] == "(1, 1000)"
    assert "up to date" in outputs[3]
