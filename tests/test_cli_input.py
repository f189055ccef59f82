"""The command line in a user's folder and under bad input: the user's specs beside the built-in ones, one
line per bad file, one-line usage errors on every command, free text shown as text, valid JSON and XML."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archgen import specs as library
from conftest import ROOT, ir_of

BAD = ROOT / "tests" / "bad_specs"
BUILTIN = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))


def archgen(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("ARCHGEN_SPECS", None)
    return subprocess.run(
        [sys.executable, "-m", "archgen", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def _spec(folder: Path, name: str, **fields: object) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": "deit_s", "name": name, **fields}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A user's project: specs/ with a new spec, one that overrides a built-in name, and a bad one."""
    specs = tmp_path / "specs"
    specs.mkdir()
    _spec(specs, "deit_s_wide", title="DeiT-S wide", stem={"dim": 512}, stages={"blocks": {"heads": 8}})
    override = yaml.safe_load((ROOT / "specs" / "deit_ti.yaml").read_text())
    override["title"] = "my DeiT-Ti, 4 blocks"
    override["stages"] = {"blocks": {"depth": 4}}
    override.pop("published", None)
    (specs / "deit_ti.yaml").write_text(yaml.safe_dump(override, sort_keys=False), encoding="utf-8")
    shutil.copy(BAD / "heads_not_dividing.yaml", specs)
    return tmp_path


BAD_LINE = "error: specs/heads_not_dividing.yaml:17:12: stages[0].heads: 7 does not divide the token width 768"


def test_list_shows_the_users_specs_beside_the_built_in_ones(folder: Path) -> None:
    proc = archgen("list", "--json", cwd=folder)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [BAD_LINE]
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert sorted(rows) == sorted({*BUILTIN, "deit_s_wide"})
    assert (rows["deit_s_wide"]["from"], rows["deit_s_wide"]["overrides_builtin"]) == ("specs/", False)
    assert (rows["deit_ti"]["from"], rows["deit_ti"]["overrides_builtin"]) == ("specs/ (overrides built-in)", True)
    assert {rows[n]["from"] for n in BUILTIN if n != "deit_ti"} == {"built-in"}
    # the user's deit_ti is the one counted (4 blocks), as `count deit_ti` finds it first
    mine = ir_of(folder / "specs" / "deit_ti.yaml").count(224)
    assert (rows["deit_ti"]["params"], rows["deit_ti"]["macs"]) == (mine.params, mine.macs)
    assert mine.params < ir_of(ROOT / "specs" / "deit_ti.yaml").count(224).params
    counted = json.loads(archgen("count", "deit_ti", "--json", cwd=folder).stdout)["counts"][0]
    assert counted["params"] == mine.params
    table = archgen("list", cwd=folder)
    assert table.returncode == 2 and table.stderr.splitlines() == [BAD_LINE]
    line = next(row for row in table.stdout.splitlines() if " deit_ti " in row)
    assert "specs/ (overrides built-in)" in line and "built-in" in next(
        row for row in table.stdout.splitlines() if " vit_b16 " in row
    )


def test_plot_shows_both_marks_the_users_and_reports_the_bad(folder: Path) -> None:
    proc = archgen("plot", "-o", "all.svg", cwd=folder)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [BAD_LINE]
    assert proc.stdout == "wrote all.svg\n"
    root = ET.parse(folder / "all.svg").getroot()
    labels = {t.text: t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "label"}
    assert set(labels) == {*BUILTIN, "deit_s_wide"}
    assert {n for n, t in labels.items() if t.get("font-weight") == "bold"} == {"deit_s_wide", "deit_ti"}


def test_an_empty_or_missing_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    proc = archgen("plot", "-o", "p.svg", cwd=tmp_path)  # nothing of the user's: the library alone
    assert proc.returncode == 0, proc.stderr
    proc = archgen("list", "--json", "--specs", "nowhere", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "error: spec folder nowhere (--specs / $ARCHGEN_SPECS): not a folder\n"
    from archgen.pictures import plot_svg

    assert "no spec to plot" in plot_svg([])  # an empty picture, not `min() arg is an empty sequence`


# Every command's options: a bad value is one line, exit 2, nothing on stdout, no usage box.
BAD_OPTIONS = [
    (["count", "deit_s", "--img-size", "22x"], "error: --img-size 22x: write one side (224, a square) or HxW"),
    (["count", "deit_s", "--img-size=224", "--img-size=x"], "error: --img-size x: write one side (224, a square)"),
    (["count", "deit_s", "--img-size", "0"], "error: --img-size 0: must be between 1 and 4,096"),
    (["count", "deit_s", "--memory", "--batch", "abc"], "error: --batch abc: not an integer"),
    (
        ["count", "deit_s", "--memory", "--batch", "10000000000000000000"],
        "error: --batch 10000000000000000000: must be between 1 and 1,048,576",
    ),
    (["count", "deit_s", "--batch", "8"], "error: --batch: only with --memory"),
    (["count", "deit_s", "--dtype", "bfloat16", "--checkpointing"], "error: --dtype, --checkpointing: only with"),
    (["count", "deit_s", "--memory", "--dtype", "int8"], "error: --dtype int8: choose float32, bfloat16, float16"),
    (["count", "deit_s", "--by", "block"], "error: --by block: choose stage, module or op"),
    (["count", "deit_s", "--bogus"], "error: no such option: --bogus"),
    (["count"], "error: missing argument 'spec'"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--top", "x"], "error: --top x: not an integer"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--top", "-1"], "error: --top -1: must be between 0"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--dtype", "float16"], "error: --dtype: only with --batch"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--batch", "0"], "error: --batch 0: must be between 1"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--img-size", "99999"], "error: --img-size 99999: must be"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--max-macs", "1e400"], "error: --max-macs 1e400: must be"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--emit", "0"], "error: --emit 0: must be between 1"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--max-combinations", "0"], "error: --max-combinations 0: must"),
    (["sweep", "deit_s", "--set", "stem.dim=1..400", "--max-combinations", "100"], "400 combinations, more than 100"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--plot", "."], "error: --plot .: a folder; name the file"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--plot", "p.jpg"], "error: --plot p.jpg: write .svg, .png, .pdf"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--emit", "1", "--out", "afile"], "error: --out afile: not a folder"),
    (["sweep", "deit_s", "--set", "stem.dim=384", "--emit", "1", "--out", "adir"], "deit_s_sweep1.yaml: a folder"),
    (["plot", "-o", "."], "error: --out .: a folder; name the file to write"),
    (["plot", "-o", "afile/p.svg"], "error: --out afile/p.svg: afile is not a folder"),
    (["diagram", "deit_s", "-o", "adir"], "error: --out adir: a folder"),
    (["build", "deit_s", "--out", "afile"], "error: --out afile: not a folder"),
    (["build", "--all", "deit_s"], "error: name specs or pass --all, not both"),
    (["check", "--out"], "error: option '--out' requires an argument"),
    (["list", "--fidelity=maybe"], "error: option '--fidelity' does not take a value"),
    (["show"], "error: missing argument 'spec'"),
    (["diff", "deit_s"], "error: missing argument 'b'"),
    (["schema", "extra"], "error: got unexpected extra argument"),
    (["nope"], "error: no such command 'nope'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "deit_s_sweep1.yaml").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = archgen(*args, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith("error: ") and "internal error" not in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_diff_prints_the_count_delta_first() -> None:
    proc = archgen("diff", "deit_s", "deit_s_distilled")
    assert proc.returncode == 0, proc.stderr
    a, b = (ir_of(ROOT / "specs" / f"{n}.yaml").count(224) for n in ("deit_s", "deit_s_distilled"))
    lines = proc.stdout.splitlines()
    assert lines[0] == "=== counts (deit_s -> deit_s_distilled)"
    assert lines[1].startswith(
        f"@224: params {a.params:,} -> {b.params:,} ({b.params - a.params:+,}, {(b.params - a.params) / a.params:+.1%})"
    )
    assert lines[2] == "=== spec (resolved)"


# --- free text from a spec ----------------------------------------------------------------------------

HOSTILE = "[/] [red]red[/red] :smile: \x1b]0;pwned\x07\x1b[2J \x9b31m \u202eevil"


def _hostile_folder(tmp_path: Path, title: str = HOSTILE) -> Path:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    published = [{"img_size": 224, "params": "21M", "source": f"src {title}", "deviation": f"[bold]{title}"}]
    _spec(specs, "hostile", title=title, published=published)
    return tmp_path


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [text for item in items for text in _strings(item)]


def _no_escapes(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e"), repr(text)


@pytest.mark.slow
def test_markup_and_escape_sequences_in_a_spec_are_shown_as_text(tmp_path: Path) -> None:
    folder = _hostile_folder(tmp_path)
    for args in (["count", "hostile"], ["list"], ["show", "hostile"], ["diff", "deit_s", "hostile"]):
        proc = archgen(*args, cwd=folder)
        assert proc.returncode == 0, (args, proc.stderr)
        _no_escapes(proc.stdout + proc.stderr)
        if args[0] == "count":
            assert "[/] [red]red[/red] :smile: \\x1b]0;pwned\\x07\\x1b[2J \\x9b31m \\u202eevil" in proc.stdout, args
    proc = archgen("count", "hostile", cwd=folder)
    assert "deviation @224 params 21M: [bold][/]" in proc.stdout.replace("\n", " ")
    for args in (["count", "hostile", "--json"], ["list", "--json"], ["show", "hostile", "--json"]):
        proc = archgen(*args, cwd=folder)
        data = json.loads(proc.stdout)  # valid JSON, the text intact
        assert any(HOSTILE in text for text in _strings(data)), args
    proc = archgen("diagram", "hostile", "-o", "h.svg", cwd=folder)
    assert proc.returncode == 0
    title = next(t.text for t in ET.parse(folder / "h.svg").getroot().iter("{http://www.w3.org/2000/svg}text"))
    assert title.startswith("[/] [red]red[/red] :smile: \\x1b]0;pwned")


def test_echoed_errors_neutralise_escape_sequences(tmp_path: Path) -> None:
    proc = archgen("count", "deit_s\x1b[2J", "--img-size", "1\x1b]0;x\x07", cwd=tmp_path)
    assert proc.returncode == 2
    _no_escapes(proc.stderr)
    assert proc.stderr == "error: --img-size 1\\x1b]0;x\\x07: write one side (224, a square) or HxW (224x320)\n"


def test_a_relative_error_that_is_not_finite_is_null_in_json() -> None:
    from archgen.cli import _json
    from archgen.fidelity import Check

    ir = ir_of(ROOT / "specs" / "deit_s.yaml")
    entry = ir.spec.published[0]
    check = Check(entry, 0)
    assert check.rel_err == float("inf")
    assert json.loads(_json({"rel_err": check.rel_err, "x": [float("nan")]})) == {"rel_err": None, "x": [None]}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_fuzz_any_title_prints_safely_and_draws_valid_xml(title: str, tmp_path: Path) -> None:
    """In-process: a spec titled with any text counts, lists and draws; the terminal gets no control
    character, the SVG is XML with the title in it."""
    from typer.testing import CliRunner

    from archgen.cli import app
    from archgen.pictures import diagram_svg
    from archgen.printable import one_line

    specs = tmp_path / "fuzz"
    specs.mkdir(exist_ok=True)
    path = _spec(specs, "fuzzed", title=title)
    try:
        loaded = library.load(path)
    except Exception as exc:
        message = str(exc)
        assert "\n" not in message
        return
    runner = CliRunner()
    result = runner.invoke(app, ["count", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _no_escapes(result.output)
    assert all(ch in "\n\t" or ch.isprintable() or ch == " " or not ch.isascii() for ch in result.output)
    from archgen.compiler import resolve

    root = ET.fromstring(diagram_svg(resolve(loaded)))
    first = next(root.iter("{http://www.w3.org/2000/svg}text")).text or ""
    assert first.startswith(one_line(title)[:5])
