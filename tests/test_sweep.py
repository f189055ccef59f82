"""``archgen sweep``: each row equals ``archgen count`` of the spec it materialises (rows drawn at random and
written out with ``--emit``), the frontier and the budgets are what their definitions say, and bad input is
one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from archgen import specs
from archgen.compiler import resolve
from archgen.sweep import Budget, MemorySetting, Row, Sweep, SweepError, emit_data, emit_text, sweep
from conftest import ROOT

MEMORY = MemorySetting(batch=3, dtype="bfloat16", checkpointing=False, optimizer="adamw")

# Axes across families: widths, depths, heads, ratios, an op's kind (a part replaced whole) and a stem.
SWEEPS = {
    "deit_s": ["stem.dim=192,320,384", "stages.blocks.depth=2,12", "stages.0.heads=3,5,6", "stages.0.mlp_ratio=2,4"],
    "cait_xxs24": ["stages.blocks.depth=4,24", "stages.blocks_token_only.block.0.op.kind=class_attention,mhsa"],
    "volo_d1": ["stages.network.0.depth=2,4", "stages.network.0.block.0.op.kernel_size=3,5", "stem.dim=192,256"],
    "ceit_t": ["stages.blocks.mlp_ratio=2,4", "stages.blocks.block.1.op.kernel_size=3,5,2", "stem.dim=192,256"],
    "deepvit_s": ["stages.blocks.depth=3,11", "stages.reattention.depth=1,5", "stages.reattention.heads=6,12"],
}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "archgen", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def swept(name: str, budget: Budget | None = None) -> Sweep:
    return sweep(specs.load(specs.find(name)), SWEEPS[name], None, budget or Budget(), MEMORY)


@pytest.mark.parametrize("name", SWEEPS)
def test_rows_equal_the_count_of_their_materialised_spec(name: str, tmp_path: Path) -> None:
    """Random valid rows, written as child specs, compiled from the file and counted from scratch."""
    result = swept(name)
    valid = result.valid
    assert (valid and len(valid) < len(result.rows)) or name != "deit_s", "deit_s's sweep has invalid rows"
    loaded = specs.load(specs.find(name))
    for row in random.Random(name).sample(valid, min(4, len(valid))):
        data = emit_data(loaded, result.axes, row)
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        ir = resolve(specs.load(path))
        total = ir.count(result.img_size)
        fp = ir.memory(result.img_size, MEMORY.batch, MEMORY.dtype, MEMORY.checkpointing, MEMORY.optimizer)
        label = f"{name} sweep row {row.index} ({data})"
        assert (row.params, row.macs) == (total.params, total.macs), f"{label}: params, MACs"
        assert (row.memory_bytes, row.activation_bytes) == (fp.total_bytes, fp.activation_bytes), f"{label}: bytes"


def test_emit_writes_a_spec_that_builds_and_counts_like_its_row(tmp_path: Path) -> None:
    args = ["sweep", "deit_s", "--set", "stem.dim=192,384", "--set", "stages.blocks.block.0.op.kind=mhsa,talking_heads"]
    table = json.loads(run(*args, "--json", "--batch", "2").stdout)
    row = next(r for r in table["rows"] if r["values"]["stages.0.block.0.op.kind"] == "talking_heads")
    proc = run(*args, "--emit", str(row["row"]), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("*.yaml")
    assert path.name == f"deit_s_sweep{row['row']}.yaml"
    child = yaml.safe_load(path.read_text())
    assert child["extends"] == "deit_s" and set(child) == {"extends", "name", "title", "stem", "stages"}
    assert set(child["stages"]) == {"blocks"} and "published" not in child
    counted = json.loads(run("count", str(path), "--json", "--memory", "--batch", "2").stdout)["counts"][0]
    assert (counted["params"], counted["macs"]) == (row["params"], row["macs"])
    assert counted["memory"]["total_bytes"] == row["memory_bytes"]
    built = run("build", str(path), "--out", str(tmp_path))
    assert built.returncode == 0, built.stderr
    assert f"params {row['params']:,}" in (tmp_path / "generated" / f"{path.stem}.py").read_text()


def test_frontier_is_the_set_no_row_dominates() -> None:
    """Checked against the definition, pair by pair: a frontier row is dominated by no other row within the
    budget (at least its parameters, at most its MACs and memory, better in one, or equal and earlier)."""
    result = swept("deit_s", Budget(macs=3_000_000_000))
    inside = result.ranked()

    def dominates(a: Row, b: Row) -> bool:
        no_worse = a.params >= b.params and a.macs <= b.macs and (a.memory_bytes or 0) <= (b.memory_bytes or 0)
        key = (a.params, a.macs, a.memory_bytes)
        better = key != (b.params, b.macs, b.memory_bytes) or (a.macs, -a.params, a.index) < (
            b.macs,
            -b.params,
            b.index,
        )
        return a is not b and no_worse and better

    for r in inside:
        assert r.frontier == (not any(dominates(o, r) for o in inside)), f"row {r.index}"
    assert 1 < sum(r.frontier for r in inside) < len(inside)


def test_budgets_split_the_rows() -> None:
    budget = Budget(params=15_000_000, macs=3_000_000_000, memory=400_000_000)
    result = swept("deit_s", budget)
    for r in result.valid:
        fits = r.params <= budget.params and r.macs <= budget.macs and (r.memory_bytes or 0) <= budget.memory
        assert r.within == fits, f"row {r.index}: {r.params:,} params {r.macs:,} MACs {r.memory_bytes:,} bytes"
    assert 0 < len(result.ranked()) < len(result.valid)


def test_invalid_combinations_are_listed_with_their_reason() -> None:
    proc = run("sweep", "deit_s", "--set", "stages.0.heads=5,6", "--set", "stem.dim=384,400", "--top", "0")
    assert proc.returncode == 0, proc.stderr
    assert "invalid row 1 (stages.0.heads=5, stem.dim=384): stages[0].heads: 5 does not divide the token width 384" in (
        proc.stdout.replace("\n", " ")
    )
    data = json.loads(
        run("sweep", "deit_s", "--set", "stages.0.heads=5,6", "--set", "stem.dim=384,400", "--json").stdout
    )
    assert [r["row"] for r in data["invalid"]] == [1, 4] and sorted(r["row"] for r in data["rows"]) == [2, 3]
    assert data["combinations"] == 4 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "stages.0.depht=1,2"], "no field 'depht' at stages.0; did you mean 'depth'?"),
        (["--set", "stages.nope.depth=1"], "no item 'nope' at stages"),
        (["--set", "name=a,b"], "not a shape"),
        (["--set", "stages.0.depth"], "write PATH=V1,V2"),
        (["--set", "stages.0.depth=9..3"], "must run upwards"),
        (["--set", "stem.dim=384", "--max-memory", "8GiB"], "--max-memory needs --batch"),
        (["--set", "stem.dim=384", "--max-macs", "lots"], "--max-macs lots: not a number"),
        (["--set", "stages.0.heads=5", "--emit", "1"], "--emit 1: not a valid spec"),
        (["--set", "stem.dim=384", "--emit", "2"], "rows are numbered 1 to 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run("sweep", "deit_s", *args, "--out", str(tmp_path), "--plot", str(tmp_path / "p.svg"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_same_sweep_same_bytes_and_plot_marks_the_frontier(tmp_path: Path) -> None:
    args = ["sweep", "deit_s", *(a for s in SWEEPS["deit_s"] for a in ("--set", s)), "--max-macs", "4G"]
    first = run(*args, "--json", "--plot", str(tmp_path / "a.svg"))
    second = run(*args, "--json", "--plot", str(tmp_path / "b.svg"))
    assert first.stdout == second.stdout
    svg = (tmp_path / "a.svg").read_text()
    assert svg == (tmp_path / "b.svg").read_text()
    data = json.loads(first.stdout)
    assert svg.count('<circle class="frontier"') == sum(r["frontier"] for r in data["rows"]) > 0
    assert svg.count('<circle class="over"') == len(data["over_budget"])
    assert 'class="budget"' in svg


def test_readme_shows_the_real_sweep_output(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme[readme.index("$ archgen sweep deit_s") :].splitlines()
    n = next(i for i, line in enumerate(lines) if not line.endswith("\\")) + 1
    words = " ".join(lines[:n]).replace("\\", " ").split()[2:]
    plot = words.index("--plot")
    assert words[plot + 1] == "examples/sweep_deit_s.svg"
    proc = run(*words[:plot], *words[plot + 2 :], "--plot", str(tmp_path / "sweep.svg"))
    assert proc.returncode == 0, proc.stderr
    output = [line.rstrip() for line in proc.stdout.replace(str(tmp_path / "sweep.svg"), words[plot + 1]).splitlines()]
    assert lines[n : n + len(output) + 1] == [*output, "```"], "README: paste the sweep's output"
    assert (tmp_path / "sweep.svg").read_text() == (ROOT / "examples" / "sweep_deit_s.svg").read_text()


def test_a_swept_img_size_counts_each_row_at_its_own_resolution() -> None:
    loaded = specs.load(specs.find("volo_d1"))
    result = sweep(loaded, ["img_size=224,384", "stem.hidden=32,64"])
    ir = resolve(loaded)
    assert result.img_size is None
    for row in result.rows:
        size = row.values[0]
        expected = ir.count(size) if row.values[1] == 64 else None
        if expected is not None:
            assert (row.params, row.macs) == (expected.params, expected.macs), f"volo_d1 row {row.index} @{size}"
    assert len({r.macs for r in result.rows}) == 4


def test_too_many_combinations_is_refused_before_counting_and_the_cap_can_be_raised() -> None:
    loaded = specs.load(specs.find("deit_s"))
    axes = ["stem.dim=64..4096:1", "stages.blocks.depth=1..30"]  # 4,033 x 30 = 120,990 combinations
    with pytest.raises(SweepError, match=r"^120,990 combinations, more than 100,000 \(fewer values, or "):
        sweep(loaded, axes)
    calls: list[tuple[int, int]] = []
    result = sweep(
        loaded, ["stem.dim=192..576:64", "stages.blocks.depth=1..30"], progress=lambda d, t: calls.append((d, t))
    )
    assert len(result.rows) == 210 and calls == [(210, 210)]  # every 250 rows, and at the end
    with pytest.raises(SweepError, match="more than 209"):
        sweep(loaded, ["stem.dim=192..576:64", "stages.blocks.depth=1..30"], max_combinations=209)


def test_progress_goes_to_stderr_and_json_stays_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from archgen import cli

    monkeypatch.setattr(cli, "LOG_ROWS", 100)  # a "long" sweep, small enough for a test
    monkeypatch.setattr("archgen.sweep.PROGRESS_EVERY", 10)
    result = CliRunner().invoke(cli.app, ["sweep", "deit_s", "--set", "stages.blocks.depth=1..200", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["combinations"] == 200
    lines = result.stderr.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("sweep: 200 of 200 combinations counted (")


# Axes whose emitted rows once failed to load back or count differently: a stage key with a dot (VOLO's
# `network.0`), a list given whole, None, a stage renamed by its own `key`, text values YAML reads otherwise.
EMIT_AXES = {
    "volo_d1": [
        "stages.network.0.depth=2,4",
        "stages.network.0.block.0.op.kernel_size=3,5",
        "stages.network.0.key=net0,network.0",
        "stem.dim=192,256",
    ],
    "deit_s": [
        "stages.blocks.heads=null,6",
        "stages.blocks.head_dim=64,null",
        "stages.0.key=trunk,blocks",
        "title=yes,1e3,null,on",
        "stages.blocks.mlp_ratio=2,4.5",
    ],
}


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_every_emitted_row_loads_back_and_counts_as_its_row(data: st.DataObject) -> None:
    import tempfile

    name = data.draw(st.sampled_from(sorted(EMIT_AXES)))
    axes = data.draw(st.lists(st.sampled_from(EMIT_AXES[name]), min_size=1, max_size=3, unique=True))
    loaded = specs.load(specs.find(name))
    result = sweep(loaded, axes)
    with tempfile.TemporaryDirectory() as folder:
        for row in result.valid:
            file, text = emit_text(loaded, result.axes, row)
            path = Path(folder) / file
            path.write_text(text, encoding="utf-8")
            total = resolve(specs.load(path)).count(result.img_size)
            assert (total.params, total.macs) == (row.params, row.macs), f"{name} {axes} row {row.index}:\n{text}"
