"""Bad input, fuzzed: valid specs mutated at random (keys, values, types, reserved identifiers, huge numbers,
NaN, control characters, deep nesting) are either refused with a one-line ``SpecError`` naming the file, or
counted, built and instantiated with exactly the counted parameters and MACs. ``count`` and ``build`` share
``resolve``, so a spec ``resolve`` accepts must also emit, and one it refuses is refused by both."""

from __future__ import annotations

import copy
import math
import random
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archgen import reserved, specs
from archgen.compiler import IR, resolve
from archgen.emit import emit
from archgen.errors import SpecError
from archgen.fidelity import checks, resolutions
from archgen.loader import dump_yaml
from conftest import ROOT, assert_counts_exact

SEEDS = [ROOT / "specs" / f"{n}.yaml" for n in ("deit_ti", "cait_xxs24", "volo_d1", "ceit_t", "deepvit_s")] + [
    ROOT / "tests" / "hybrids" / f"{n}.yaml" for n in ("vit_outlook_pyramid", "vit_s16_reg4_dinov2", "deit_s_leff")
]
# Above this many blocks a mutant is only counted and emitted, not instantiated (time, not memory: meta device).
MAX_BUILT_BLOCKS = 24

# Identifiers that collide with something, and a few that do not.
IDENTIFIERS = sorted(
    reserved.KEYWORDS
    | reserved.SOFT_KEYWORDS
    | reserved.MODULE_NAMES
    | reserved.NN_MODULE
    | reserved.MODEL_ATTRS
    | {"tuple", "list", "print", "ValueError", "Exception", "object", "True", "None", "__init__", "__getattr__"}
    | {"_modules", "_x", "norm1", "norm2", "ls1", "gamma_1", "drop_path", "attn", "mlp", "Block", "Attention"}
    | {"Mlp", "ReAttentionBlock", "LayerScaleBlock", "blocks", "network", "fresh_name", "Fresh", "stage_b"}
    | {"match", "case", "x", "Model", "mixer", "ffn", "stem", "net"}
)
NUMBERS = [0, -1, 1, 2, 3, 7, 13, 4096, 4097, 10**9, 10**12, 10**30, 2**63, 1e-300, 1e300, 0.5, -0.0]
NUMBERS += [math.nan, math.inf, -math.inf]
TWEAKS = [1, 2, 3, 4, 6, 7, 8, 12, 16, 32, 64, 96]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF), max_size=12)


def _nested(depth: int) -> Any:
    return [_nested(depth - 1)] if depth else 1


VALUES = st.one_of(
    st.sampled_from(IDENTIFIERS),
    st.sampled_from(NUMBERS),
    st.integers(-(10**6), 10**6),
    TEXT,
    st.booleans(),
    st.none(),
    st.sampled_from(["mhsa", "mlp", "outlook", "class_attention", "lca", "blocks", "conv_downsample", "token"]),
    st.just(_nested(30)),
    st.just(list(range(2000))),
    st.just({}),
    st.just([]),
)


def _seed(path: Path) -> dict[str, Any]:
    """A library spec as one mapping (its parents merged in), two blocks a stage at most: small enough that
    most mutants are instantiated."""
    data = copy.deepcopy(specs.load(path).located.data)
    for stage in data["stages"]:
        if "depth" in stage:
            stage["depth"] = min(stage["depth"], 2)
    return data


SEED_DATA = {p.stem: _seed(p) for p in SEEDS}


def _nodes(data: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _nodes(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _nodes(v, (*path, i))
    return out


def _at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _identifier_slots(data: dict[str, Any]) -> list[tuple]:
    """Where a spec names something in the generated code: name, class_name, stage keys, op keys."""
    slots: list[tuple] = [("name",), ("class_name",)]
    stages = data.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(stage, dict):
            continue
        slots.append(("stages", i, "key"))
        block = stage.get("block")
        for j, branch in enumerate(block if isinstance(block, list) else []):
            if isinstance(branch, dict) and isinstance(branch.get("op"), (str, dict)):
                slots.append(("stages", i, "block", j, "op", "key"))
    return slots


def _name(data: dict[str, Any], slot: tuple, identifier: str) -> None:
    """Set the identifier at ``slot`` (an op given as `op: mlp` is spelt out to take a key)."""
    if slot[-2:] == ("op", "key"):
        branch = _at(data, slot[:-2])
        if isinstance(branch.get("op"), str):
            branch["op"] = {"kind": branch["op"]}
    owner = _at(data, slot[:-1])
    if isinstance(owner, dict):
        owner[slot[-1]] = identifier


@st.composite
def mutants(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(SEED_DATA[draw(st.sampled_from(sorted(SEED_DATA)))])
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["tweak", "tweak", "tweak", "set", "delete", "add", "identifier", "identifier"]))
        nodes = _nodes(data)[1:]
        numbers = [p for p in nodes if type(_at(data, p)) in (int, float, bool)]
        if how == "identifier":
            _name(data, draw(st.sampled_from(_identifier_slots(data))), draw(st.sampled_from(IDENTIFIERS)))
        elif how == "tweak" and numbers:  # a plausible change of one number: most of these still build
            path = draw(st.sampled_from(numbers))
            old = _at(data, path)
            new = (not old) if isinstance(old, bool) else draw(st.sampled_from(TWEAKS))
            _at(data, path[:-1])[path[-1]] = type(old)(new)
        elif how == "add" or not nodes:
            owner = _at(data, draw(st.sampled_from([()] + [p for p in nodes if isinstance(_at(data, p), dict)])))
            owner[draw(st.one_of(st.sampled_from(IDENTIFIERS), TEXT))] = copy.deepcopy(draw(VALUES))
        else:
            path = draw(st.sampled_from(nodes))
            if how == "set":
                _at(data, path[:-1])[path[-1]] = copy.deepcopy(draw(VALUES))  # st.just shares its object
            else:
                del _at(data, path[:-1])[path[-1]]
    return data


def _write(data: dict[str, Any], folder: Path) -> Path:
    """The mutant as a YAML file named for its `name` where that could be a file stem."""
    name = data.get("name")
    stem = name if isinstance(name, str) and re.fullmatch(r"[a-z_][a-z0-9_]{0,59}", name) else "fuzz"
    path = folder / f"{stem}.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


def _counted(path: Path) -> IR:
    """What `archgen count` does before printing: resolve, count and check every resolution, and trace the
    training memory at the spec's own."""
    ir = resolve(specs.load(path))
    for size in resolutions(ir):
        ir.count(size)
        checks(ir, size)
    ir.memory(ir.spec.img_size, 2)
    return ir


def check_mutant(data: dict[str, Any], folder: Path) -> str:
    """Refused with one line naming the file, or built exactly as counted; says which."""
    path = _write(data, folder)
    label = specs.label_for(path)
    try:
        ir = _counted(path)
    except SpecError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith((label, "specs/")), f"{text!r} for {path.name}"
        return "refused"
    (source,) = emit(ir).values()  # build accepts what count accepts
    module = types.ModuleType("archgen_fuzz")
    exec(compile(source, str(path), "exec"), module.__dict__)
    blocks = sum(getattr(s, "depth", 1) for s in ir.spec.stages)
    if blocks > MAX_BUILT_BLOCKS:
        return "counted"
    assert_counts_exact(path.stem, ir, getattr(module, ir.spec.name), ir.spec.img_size)
    return "built"


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@FUZZ
@given(mutants())
def test_mutated_specs_are_refused_in_one_line_or_built_exactly_as_counted(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_mutant(data, Path(folder))


def test_every_seed_is_built_exactly_as_counted(tmp_path: Path) -> None:
    """The seeds themselves pass the fuzz check (else every mutant would be refused for the seed's sake)."""
    for name, data in SEED_DATA.items():
        assert check_mutant(copy.deepcopy(data), tmp_path) == "built", name


def _refused_mutants(n: int) -> list[dict[str, Any]]:
    """``n`` mutants that `resolve` refuses, from a fixed random stream (the same every run)."""
    rng = random.Random(18)
    out = []
    with tempfile.TemporaryDirectory() as folder:
        while len(out) < n:
            data = copy.deepcopy(SEED_DATA[rng.choice(sorted(SEED_DATA))])
            _name(data, rng.choice(_identifier_slots(data)), rng.choice(IDENTIFIERS))
            if rng.random() < 0.5:
                path = rng.choice(_nodes(data)[1:])
                _at(data, path[:-1])[path[-1]] = rng.choice(NUMBERS)
            if check_mutant(copy.deepcopy(data), Path(folder)) == "refused":
                out.append(data)
    return out


@pytest.mark.parametrize("command", ["count", "build"])
def test_cli_refuses_mutants_in_one_line_with_exit_2_writing_nothing(command: str, tmp_path: Path) -> None:
    for i, data in enumerate(_refused_mutants(3)):
        folder = tmp_path / str(i)
        folder.mkdir()
        path = _write(data, folder)
        out = folder / "out"
        args = ["build", str(path), "--out", str(out)] if command == "build" else ["count", str(path)]
        proc = subprocess.run(
            [sys.executable, "-m", "archgen", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, f"{path.name}: {proc.stderr}"
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {path}:"), proc.stderr
        assert sorted(p.name for p in folder.iterdir()) == [path.name]  # nothing written
