"""The command line as a user meets it: exit codes, one-line errors, JSON shapes, drift detection."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from archgen.counting import Count
from archgen.fidelity import checks
from conftest import ROOT, SPECS, ir_of

BAD = ROOT / "tests" / "bad_specs"
EXPECTED = dict(
    line.split(": ", 1) for line in (BAD / "expected_errors.txt").read_text(encoding="utf-8").splitlines() if line
)


def archgen(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archgen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        # this checkout's archgen, from whatever folder (an installed one may be another)
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})},
        timeout=120,
        umask=umask,
    )


def test_corpus_is_complete() -> None:
    names = {p.stem for p in BAD.glob("*.yaml") if not p.stem.startswith("ok_")}
    assert names == set(EXPECTED), "every bad spec needs a snapshot line in expected_errors.txt"
    assert len(names) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec_gives_one_line_error_and_writes_nothing(name: str, tmp_path: Path) -> None:
    proc = archgen("build", f"tests/bad_specs/{name}.yaml", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines == [EXPECTED[name]], f"{name}: {proc.stderr}"
    assert lines[0].startswith("error: tests/bad_specs/"), lines[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


BAD_IN_FOLDER = ("heads_not_dividing", "misspelt_field", "unknown_kind")


def test_build_all_writes_every_good_spec_and_reports_every_bad_one(tmp_path: Path) -> None:
    """--all as a linter: one line per bad spec (its own error, at its own line), the good specs and the schema
    written, nothing for a bad spec, exit 2. Named specs stay all-or-nothing."""
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(ROOT / "specs" / "deit_ti.yaml", specs)
    shutil.copy(ROOT / "specs" / "vit_b16.yaml", specs)
    for name in BAD_IN_FOLDER:
        shutil.copy(BAD / f"{name}.yaml", specs)
    expected = [EXPECTED[name].replace("tests/bad_specs/", "specs/") for name in BAD_IN_FOLDER]
    proc = archgen("build", "--all", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [*expected, "3 bad spec(s): nothing written for them"]
    built = sorted(p.name for p in (tmp_path / "generated").iterdir())
    assert built == ["deit_ti.py", "vit_b16.py"]
    assert (tmp_path / "generated" / "deit_ti.py").read_bytes() == (ROOT / "generated" / "deit_ti.py").read_bytes()
    # the schema every spec's header points the editor at, next to the specs; the folder's README is the user's
    assert (specs / "schema.json").read_bytes() == (ROOT / "specs" / "schema.json").read_bytes()
    assert not (specs / "README.md").exists()
    proc = archgen("check", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.splitlines() == expected
    assert proc.stdout == ""
    (specs / "schema.json").write_text("{}\n")  # a stale schema is drift, as a stale module is
    for name in BAD_IN_FOLDER:
        (specs / f"{name}.yaml").unlink()
    proc = archgen("check", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1 and "--- a/specs/schema.json" in proc.stdout
    assert archgen("build", "--all", cwd=tmp_path).returncode == 0
    assert archgen("check", cwd=tmp_path).stdout == "generated/ is up to date (3 files)\n"
    # named specs: all rendered before any is written
    shutil.copy(BAD / "heads_not_dividing.yaml", specs)
    proc = archgen("build", "deit_ti", "heads_not_dividing", "--out", str(tmp_path / "named"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.splitlines() == expected[:1]
    assert not (tmp_path / "named").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_open_would_give(umask: int, tmp_path: Path) -> None:
    proc = archgen("build", "deit_ti", "--out", str(tmp_path), umask=umask)
    assert proc.returncode == 0, proc.stderr
    built = tmp_path / "generated" / "deit_ti.py"
    assert stat.S_IMODE(built.stat().st_mode) == 0o666 & ~umask  # 0o644 under the usual 0o022
    plot = tmp_path / "plot.svg"
    assert archgen("plot", "-o", str(plot), umask=umask).returncode == 0
    assert stat.S_IMODE(plot.stat().st_mode) == 0o666 & ~umask
    # an existing file keeps its own mode, as open(path, "w") would leave it
    built.chmod(0o640)
    assert archgen("build", "deit_ti", "--out", str(tmp_path), umask=umask).returncode == 0
    assert stat.S_IMODE(built.stat().st_mode) == 0o640
    assert [p.name for p in built.parent.iterdir()] == ["deit_ti.py"]  # no temporary file left behind


def test_check_detects_stale_missing_and_extra(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copytree(ROOT / "generated", tmp_path / "generated")
    assert archgen("check", cwd=tmp_path).returncode == 0
    stale = tmp_path / "generated" / "deit_s.py"
    stale.write_text(stale.read_text().replace("eps=1e-06", "eps=1e-05", 1))
    proc = archgen("check", cwd=tmp_path)
    assert proc.returncode == 1
    assert "--- a/generated/deit_s.py" in proc.stdout and "+++ b/generated/deit_s.py" in proc.stdout
    stale.unlink()
    (tmp_path / "generated" / "stray.py").write_text("x = 1\n")
    proc = archgen("check", cwd=tmp_path)
    assert proc.returncode == 1
    assert "missing: generated/deit_s.py" in proc.stdout and "extra: generated/stray.py" in proc.stdout


def test_count_json_shape_and_values() -> None:
    proc = archgen("count", "vit_b16", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"name", "counts"} and data["name"] == "vit_b16"
    ir = ir_of(ROOT / "specs" / "vit_b16.yaml")
    assert [c["img_size"] for c in data["counts"]] == [224, 384]
    for row in data["counts"]:
        assert set(row) == {"img_size", "params", "macs", "published", "convention", "value", "by", "breakdown"}
        total = ir.count(row["img_size"])
        assert (row["params"], row["macs"]) == (total.params, total.macs)
        assert (row["convention"], row["value"], row["by"]) == ("macs", total.macs, "stage")
    assert data["counts"][0]["published"]["params"][0]["printed"] == "86M"
    assert data["counts"][0]["published"]["params"][0]["rel_err"] == round((86e6 - 86_567_656) / 86_567_656, 6)


def _in(convention: str, node: Count) -> int:
    """A count in a convention, spelt out here rather than through Count.in_convention."""
    return {"macs": node.macs, "flops": 2 * node.macs, "fvcore": node.macs + node.norm_extra}[convention]


@pytest.mark.parametrize("convention", ["macs", "flops", "fvcore"])
@pytest.mark.parametrize("by", ["stage", "module", "op"])
def test_count_json_has_the_breakdown_in_the_chosen_convention(by: str, convention: str) -> None:
    proc = archgen("count", "cait_xxs24", "--json", "--by", by, "--convention", convention)
    assert proc.returncode == 0, proc.stderr
    ir = ir_of(ROOT / "specs" / "cait_xxs24.yaml")
    for row in json.loads(proc.stdout)["counts"]:
        total = ir.count(row["img_size"])
        assert (row["convention"], row["by"], row["value"]) == (convention, by, _in(convention, total))
        assert (row["params"], row["macs"]) == (total.params, total.macs)  # the old keys keep their meaning
        rows = {r["name"]: r for r in row["breakdown"]}
        assert len(rows) == len(row["breakdown"]), "breakdown names are unique"
        for r in row["breakdown"]:
            assert r["value"] == {"macs": r["macs"], "flops": 2 * r["macs"], "fvcore": r["value"]}[convention]
        if by == "stage":
            assert list(rows) == [c.name for c in total.children]
            for child in total.children:
                assert (rows[child.name]["params"], rows[child.name]["value"]) == (child.params, _in(convention, child))
        if by in ("stage", "op"):  # a partition: the rows add up to the whole
            assert sum(r["params"] for r in row["breakdown"]) == total.params
            assert sum(r["value"] for r in row["breakdown"]) == _in(convention, total)
        if by == "op":
            assert {"linear", "matmul", "norm"} <= set(rows)
        if by == "module":
            n, dim = (row["img_size"] // 16) ** 2, 192  # CaiT: the self-attention blocks see the patches only
            qkv = rows["blocks.0.attn.qkv"]
            assert (qkv["params"], qkv["macs"]) == (3 * dim * dim + 3 * dim, n * dim * 3 * dim)
            norm = rows["blocks.0.norm1"]
            assert (norm["params"], norm["macs"]) == (2 * dim, 0)
            assert norm["value"] == (5 * n * dim if convention == "fvcore" else 0)  # fvcore: 5 per element
            assert rows["blocks.23.mlp.fc2"]["params"] == 4 * dim * dim + dim
            assert "blocks_token_only.1.attn.q" in rows and "head" in rows


def test_count_by_module_prints_dotted_paths_with_their_counts() -> None:
    proc = archgen("count", "vit_b16", "--by", "module")
    assert proc.returncode == 0, proc.stderr
    cells = {}
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("│")[1:-1]]
        if len(parts) == 4:
            cells[parts[0]] = parts[1:]
    # blocks.3.attn.qkv: Linear(768, 3 x 768) with bias, over 197 tokens
    assert cells["blocks.3.attn.qkv"][:2] == [f"{3 * 768 * 768 + 3 * 768:,}", f"{197 * 768 * 3 * 768:,}"]
    assert cells["blocks.0.attn.qkv"][0] == f"{3 * 768 * 768 + 3 * 768:,}"
    assert cells["blocks.11.mlp.fc1"][0] == f"{768 * 3072 + 3072:,}"
    assert cells["patch_embed.proj"][0] == f"{16 * 16 * 3 * 768 + 768:,}"
    assert "qkv" not in cells and "attn" not in cells  # no bare leaf names


def test_closed_stdout_ends_quietly_with_exit_0(tmp_path: Path) -> None:
    # `archgen count ... | head -n 1` in a shell, with the archgen side's own status
    err = tmp_path / "stderr"
    script = f'{sys.executable} -m archgen count vit_b16 --by module 2>"$1" | head -n 1; echo "${{PIPESTATUS[0]}}"'
    proc = subprocess.run(["bash", "-c", script, "_", str(err)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ViT-B/16 (vit_b16)") and lines[-1] == "0", proc.stdout
    assert err.read_text() == ""
    # deterministic: the reader is gone before archgen writes a byte (as `| true` almost always is)
    for args in (["count", "vit_b16", "--by", "module"], ["count", "vit_b16", "--json"], ["list"], ["show", "deit_s"]):
        read, write = os.pipe()
        os.close(read)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "archgen", *args], cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True
            )
        finally:
            os.close(write)
        assert (proc.returncode, proc.stderr) == (0, ""), args


def test_count_img_size_option_and_bad_size() -> None:
    proc = archgen("count", "deit_s", "--img-size", "448", "--json")
    assert [c["img_size"] for c in json.loads(proc.stdout)["counts"]] == [448]
    assert json.loads(proc.stdout)["counts"][0]["published"] is None
    proc = archgen("count", "deit_s", "--img-size", "450")
    assert proc.returncode == 2
    # the option, not the spec, is wrong: the error names the option and where the value it fails stands
    assert proc.stderr.splitlines() == [
        "error: --img-size: 450: stem.patch_size: 16 does not divide the image size 450 (specs/vit_b16.yaml:13:39)"
    ]


def test_count_table_shows_deviation_text() -> None:
    proc = archgen("count", "vit_l16")
    assert proc.returncode == 0
    assert "307M" in proc.stdout and "L/32" in proc.stdout


def test_rel_err_states_its_sign_and_has_it() -> None:
    proc = archgen("count", "vit_b16")
    assert proc.returncode == 0
    assert "rel. err" in proc.stdout and "(pub-ours)/ours" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "params 86M (ViT paper Table 1)" in line)
    assert f"{(86e6 - 86_567_656) / 86_567_656:+.2%}" in row and "-0.66%" in row  # the paper prints less: negative
    help_text = " ".join(archgen("count", "--help", env={"COLUMNS": "300"}).stdout.split())
    assert "rel. err is (published - ours) / ours" in help_text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`rel. err` = (published − ours) / ours" in readme and "| rel. err (pub-ours)/ours |" in readme


def test_misspelt_name_gets_a_suggestion() -> None:
    proc = archgen("count", "deit_smal")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: specs/deit_smal.yaml:1:1: no spec named 'deit_smal'; did you mean 'deit_s'?"


def test_list_json_covers_every_spec() -> None:
    proc = archgen("list", "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == [p.stem for p in SPECS]
    for row in rows:
        total = ir_of(ROOT / "specs" / f"{row['name']}.yaml").count(row["img_size"])
        assert row["params"] == total.params and row["macs"] == total.macs


def test_version_and_usage_errors() -> None:
    proc = archgen("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("archgen ")
    assert archgen("build").returncode == 2
    assert archgen("no-such-command").returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ["count", "vit_b16", "--json"],
        ["count", "volo_d1", "--memory", "--batch", "8", "--json"],
        ["sweep", "deit_s", "--set", "stem.dim=192,384", "--batch", "4", "--max-memory", "1GiB", "--json"],
        ["list", "--json"],
    ],
)
def test_counting_never_imports_torch(args: list[str]) -> None:
    code = (
        "import sys; from archgen.cli import app\n"
        f"try:\n    app({args!r})\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'jinja2' not in sys.modules, 'jinja2 was imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_show_prints_the_merged_spec() -> None:
    import yaml

    proc = archgen("show", "deit_s_distilled")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)
    # dim from deit_s, patch from vit_b16, the rest the part's defaults
    assert data["stem"] == {"kind": "patch_embed", "patch_size": 16, "dim": 384, "bias": True, "norm": None,
                            "remainder": "refuse"}  # fmt: skip
    assert (
        data["prefix_tokens"] == {"cls": True, "dist": True, "reg": 0, "shared": False}
        and data["head"]["kind"] == "distilled"
    )


def test_diff_shows_spec_code_and_count_delta() -> None:
    proc = archgen("diff", "deit_s", "deit_s_distilled")
    assert proc.returncode == 0, proc.stderr
    assert "-  dist: false\n+  dist: true" in proc.stdout
    assert "+        self.head_dist = nn.Linear(384, num_classes)" in proc.stdout
    a = ir_of(ROOT / "specs" / "deit_s.yaml").count(224)
    b = ir_of(ROOT / "specs" / "deit_s_distilled.yaml").count(224)
    assert f"params {a.params:,} -> {b.params:,} ({b.params - a.params:+,}" in proc.stdout


def test_schema_command_prints_the_committed_schema() -> None:
    proc = archgen("schema")
    assert proc.returncode == 0
    assert proc.stdout == (ROOT / "specs" / "schema.json").read_text(encoding="utf-8")


def test_plot_is_valid_svg_with_every_spec(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    out = tmp_path / "plot.svg"
    proc = archgen("plot", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(out).getroot()
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for path in SPECS:
        assert path.stem in text.split(), path.stem
    circles = list(root.iter("{http://www.w3.org/2000/svg}circle"))
    published = [c for c in circles if c.get("fill") == "none"]
    assert len(published) >= 10  # hollow markers: the published points


SVG = "{http://www.w3.org/2000/svg}"


def _text_box(t: ET.Element, em: float = 0.6) -> tuple[float, float, float, float]:
    """A text's extent estimated from its characters (0.6 em each), ascent 0.8 em, descent 0.25 em."""
    size, x, y = float(t.get("font-size", "12")), float(t.get("x", "0")), float(t.get("y", "0"))
    width = len(t.text or "") * size * em
    left = {"start": x, "middle": x - width / 2, "end": x - width}[t.get("text-anchor", "start")]
    return left, y - 0.8 * size, left + width, y + 0.25 * size


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _gap(box: tuple[float, ...], x: float, y: float) -> float:
    return math.hypot(max(box[0] - x, 0, x - box[2]), max(box[1] - y, 0, y - box[3]))


def test_plot_labels_overlap_nothing_and_published_points_are_joined(tmp_path: Path) -> None:
    out = tmp_path / "plot.svg"
    assert archgen("plot", "--out", str(out)).returncode == 0
    root = ET.parse(out).getroot()
    labels = [t for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    circles = [c for c in root.iter(f"{SVG}circle") if c.get("class") != "legend"]
    lines = list(root.iter(f"{SVG}line"))
    assert sorted(t.text for t in labels) == sorted(p.stem for p in SPECS)  # one label per spec
    boxes = [_text_box(t) for t in labels]
    for i, a in enumerate(boxes):
        for j in range(i):
            assert not _overlap(a, boxes[j]), (labels[i].text, labels[j].text)
        for c in circles:
            cx, cy, r = float(c.get("cx")), float(c.get("cy")), float(c.get("r"))
            assert not _overlap(a, (cx - r, cy - r, cx + r, cy + r)), (labels[i].text, c.findtext(f"{SVG}title"))

    def centre(c: ET.Element) -> tuple[float, float]:
        return float(c.get("cx")), float(c.get("cy"))

    filled = {c.findtext(f"{SVG}title").split(":")[0]: centre(c) for c in circles if c.get("fill") != "none"}
    hollow = [c for c in circles if c.get("fill") == "none"]
    ends = [((float(e.get("x1")), float(e.get("y1"))), (float(e.get("x2")), float(e.get("y2")))) for e in lines]
    # one hollow marker per published number at the spec's default resolution, counted from the IR
    irs = {p.stem: ir_of(p) for p in SPECS}
    assert len(hollow) == sum(len(checks(ir, ir.spec.img_size)) for ir in irs.values())
    for c in hollow:
        name = c.findtext(f"{SVG}title").split(":")[0]
        assert (filled[name], centre(c)) in ends or (centre(c), filled[name]) in ends, f"{name}: not joined"
    # each label (the lines of a shared label together) is next to its spec's marker or joined to it by a leader
    for t, box in zip(labels, boxes, strict=True):
        x, y = filled[t.text]
        column = sorted(
            (_text_box(u) for u in labels if (u.get("x"), u.get("text-anchor")) == (t.get("x"), t.get("text-anchor"))),
            key=lambda b: b[1],
        )
        # the lines of a shared label: the run of lines one line pitch (1.2 x 11 px) apart that holds this one
        k = column.index(box)
        lo = hi = k
        while lo > 0 and column[lo][1] - column[lo - 1][1] <= 1.2 * 11 + 0.5:
            lo -= 1
        while hi + 1 < len(column) and column[hi + 1][1] - column[hi][1] <= 1.2 * 11 + 0.5:
            hi += 1
        block = column[lo : hi + 1]
        union = (min(b[0] for b in block), min(b[1] for b in block), max(b[2] for b in block), max(b[3] for b in block))
        if _gap(union, x, y) <= 12:
            continue
        assert any(math.hypot(a[0] - x, a[1] - y) <= 9 and _gap(union, *b) <= 12 for a, b in ends), (
            f"{t.text}: label set apart with no leader"
        )


COUNTS = re.compile(r"params ([\d,]+) · MACs ([\d.]+) ([GM])|: ([\d,]+) params")


def _shown(text: str) -> tuple[int, int | None]:
    """(params, MACs) read back from a diagram text; MACs None where only params are shown."""
    m = COUNTS.search(text)
    assert m, text
    if m.group(4):
        return int(m.group(4).replace(",", "")), None
    return int(m.group(1).replace(",", "")), round(float(m.group(2)) * {"G": 1e9, "M": 1e6}[m.group(3)])


@pytest.mark.parametrize(
    "name", ["volo_d1", "volo_d3", "cait_s24", "cait_xxs24", "ceit_t", "vit_b16_reg4_gap", "deepvit_s"]
)
def test_diagram_shows_every_stage_its_counts_and_where_tokens_and_tables_enter(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.svg"
    proc = archgen("diagram", name, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    texts = [(t.text or "", float(t.get("y"))) for t in ET.parse(out).getroot().iter(f"{SVG}text")]
    ir = ir_of(ROOT / "specs" / f"{name}.yaml")
    size = ir.spec.img_size
    total = ir.count(size)

    def find(start: str, box: bool = False) -> tuple[str, float]:
        """The one text starting with ``start`` (a box title: whose name, before ':' or ' (', is ``start``)."""
        hits = [(t, y) for t, y in texts if (t.split(":")[0].split(" (")[0] == start if box else t.startswith(start))]
        assert len(hits) == 1, (start, hits)
        return hits[0]

    def same(shown: tuple[int, int | None], params: int, macs: int) -> None:
        assert shown[0] == params
        if shown[1] is not None:  # three significant digits
            assert abs(shown[1] - macs) <= 0.005 * macs, (shown, macs)

    same(_shown(find("total: ")[0]), total.params, total.macs)
    listed = 0
    at = find("input:")[1]  # every box and every entry point in the order of the IR's walk, downwards
    keys = [getattr(w.kind, "key", None) for w in ir.walk(size)]
    for w, key in zip(ir.walk(size), keys, strict=True):
        count = w.kind.count(w.s_in, ir.model)
        if w.kind.row(w.s_in, ir.model) is not None:
            _title, y = find(key or "stem", box=True)
            box = [t for t, ty in texts if y < ty < y + 40 and t.startswith("params ")]
            assert len(box) == 1, key
            same(_shown(box[0]), count.params, count.macs)
        elif w.kind.slot == "tokens":  # prefix tokens joining: each group's parameter by name
            names = ", ".join(f"{g}_token" for g in w.kind.groups)
            n = w.s_out.prefix - w.s_in.prefix
            text, y = find(f"+ {names} join")
            assert f"({n} token{'s' if n > 1 else ''})" in text
            same(_shown(text), count.params, 0)
            assert count.params == n * w.s_out.dim
        elif w.kind.slot == "pos_embed":
            text, y = find("+ pos_embed (")
            pos = ir.spec.pos_embed
            assert text.startswith(f"+ pos_embed ({pos.kind}")
            if getattr(pos, "covers", None):
                assert f"covers {pos.covers}" in text
            same(_shown(text), count.params, 0)
        elif w.kind.slot == "layout":
            text, y = find(f"tokens as a {'sequence' if w.s_out.layout == 'seq' else 'grid'}: {w.s_out.tokens()}")
            count = Count("")
        else:
            text, y = find(f"{count.name} (")
            same(_shown(text), count.params, count.macs)
        assert y > at, f"{name}: {w.kind.kind} out of order"
        at = y
        listed += count.params
    head = ir.head.count(ir.final(size), ir.model, ir.fc_norm)
    _title, y = find("head", box=True)
    assert y > at
    box = [t for t, ty in texts if y < ty < y + 40 and t.startswith("params ")]
    same(_shown(box[0]), head.params, head.macs)
    assert listed + head.params == total.params  # nothing left out, nothing counted twice
    for stage in ir.spec.stages:
        find(stage.key, box=True)


def test_diagram_draws_every_spec_and_hybrid() -> None:
    from archgen.pictures import counts_text, diagram_svg
    from conftest import ALL

    for path in ALL:
        ir = ir_of(path)
        root = ET.fromstring(diagram_svg(ir))
        total = ir.count(ir.spec.img_size)
        texts = [t.text for t in root.iter(f"{SVG}text")]
        assert f"total: {counts_text(total.params, total.macs)}" in texts, path.stem


def test_internal_error_is_one_line_with_a_hint_and_debug_shows_the_traceback() -> None:
    code = (
        "import archgen.fidelity as f\n"
        "def boom(*a, **k):\n    raise RuntimeError('simulated bug')\n"
        "f.resolutions = boom\n"
        "import sys\nfrom archgen.cli import main\nsys.argv = ['archgen', *sys.argv[1:]]\nmain()\n"
    )
    plain = subprocess.run([sys.executable, "-c", code, "count", "deit_s"], cwd=ROOT, capture_output=True, text=True)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [
        "internal error: RuntimeError: simulated bug (rerun with --debug for the traceback)"
    ]
    debug = subprocess.run(
        [sys.executable, "-c", code, "--debug", "count", "deit_s"], cwd=ROOT, capture_output=True, text=True
    )
    assert "Traceback" in debug.stderr and "simulated bug" in debug.stderr
