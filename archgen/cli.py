"""Command line: ``archgen build | check | count | list``. Exit 0 ok, 1 problem found, 2 bad input.

Only the standard library, typer and the compiler are imported at start-up; torch never is, and
Jinja only by the commands that render code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from archgen import __version__

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compile vision-transformer specs into standalone PyTorch modules and count them exactly.",
)
_state = {"debug": False}


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _guard(fn: Any) -> Any:
    """Turn every error into one line on stderr (exit 2); ``--debug`` re-raises for the traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        code = 0
        try:
            try:
                return _reported(fn, *args, **kwargs)
            except typer.Exit as exc:
                code = exc.exit_code
                raise
            finally:
                sys.stdout.flush()  # a reader that went away shows up here, not at interpreter exit
        except BrokenPipeError:
            # `archgen count ... | head`: the reader has what it wanted; stop quietly with the command's own
            # status (0 unless it had already decided otherwise), as a Unix filter does.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(code) from None

    return wrapper


def _reported(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from archgen.errors import SpecError

    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, SystemExit, BrokenPipeError):
        raise
    except SpecError as exc:
        if _state["debug"]:
            raise
        _fail(f"error: {exc}")
    except Exception as exc:  # an internal error: one line and a hint, never a traceback
        if _state["debug"]:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"archgen {__version__}")
        raise typer.Exit(0)


SPECS_HELP = (
    "Your spec folder (also $ARCHGEN_SPECS; default ./specs if there is one): names are looked up there, then in "
    "the built-in library, and --all, check, list and plot work on it."
)
SpecFolder = Annotated[Path | None, typer.Option("--specs", help=SPECS_HELP)]


def _use_specs(folder: Path | None) -> None:
    import os

    if folder is not None:
        os.environ["ARCHGEN_SPECS"] = str(folder)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    spec_folder: SpecFolder = None,
) -> None:
    _state["debug"] = debug
    _use_specs(spec_folder)


def _is_library(folder: Path) -> bool:
    """Whether ``folder`` is archgen's own spec library (its schema and field reference are built with it)."""
    from archgen import specs

    return folder.resolve() == specs.builtin_dir().resolve()


def _spec_paths(items: list[str], all_: bool) -> list[Path]:
    from archgen import specs

    if all_:
        return specs.all_paths()
    if not items:
        _fail("error: name specs to build, or pass --all")
    return [specs.find(item) for item in items]


@app.command()
@_guard
def build(
    spec: Annotated[list[str] | None, typer.Argument(help="Spec files or names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Build every spec in the spec folder (see --specs).")] = False,
    out: Annotated[Path, typer.Option(help="Folder that holds generated/.")] = Path("."),
    spec_folder: SpecFolder = None,
) -> None:
    """Write <out>/generated/<name>.py for each spec (all rendered and checked before any is written)."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import render_all, write_atomic

    files = render_all(_spec_paths(spec or [], all_), docs=all_ and _is_library(specs.spec_dir()))
    for target in write_atomic(out, files):
        typer.echo(f"wrote {target.as_posix()}")


@app.command()
@_guard
def check(
    root: Annotated[Path, typer.Option("--out", "--root", help="Folder that holds generated/.")] = Path("."),
    spec_folder: SpecFolder = None,
) -> None:
    """Exit 0 if <out>/generated/ is exactly what the spec folder's specs produce; else print the diff, exit 1."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import drift, render_all

    expected = render_all(specs.all_paths(), docs=_is_library(specs.spec_dir()))
    problems = drift(root, expected)
    for problem in problems:
        typer.echo(problem)
    if problems:
        typer.echo(f"{len(problems)} file(s) out of date; run: archgen build --all", err=True)
        raise typer.Exit(1)
    typer.echo(f"generated/ is up to date ({len(expected)} files)")


@app.command()
@_guard
def count(
    spec: Annotated[str, typer.Argument(help="Spec name or file.")],
    img_size: Annotated[
        list[int] | None, typer.Option("--img-size", help="Resolution(s) to count (repeatable).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Machine-readable output: per resolution the counts, the --convention value, the --by breakdown "
            "and the published numbers (rel_err = (published - ours) / ours).",
        ),
    ] = False,
    by: Annotated[
        str,
        typer.Option("--by", help="Breakdown rows: stage (top-level attributes), module (every dotted path), op."),
    ] = "stage",
    convention: Annotated[
        str, typer.Option("--convention", help="Counts shown as macs, flops (2 x MACs) or fvcore (MACs + norms).")
    ] = "macs",
    memory: Annotated[
        bool,
        typer.Option(
            "--memory",
            help="Also the bytes of one training step: parameters, gradients, optimizer state and the activations "
            "autograd keeps for backward (exact for torch on CPU; drop-path and dropout 0), per stage and per block "
            "kind.",
        ),
    ] = False,
    batch: Annotated[int, typer.Option("--batch", help="Batch size for --memory.")] = 1,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Dtype the module is cast to for --memory: float32, bfloat16, float16.")
    ] = "float32",
    checkpointing: Annotated[
        bool, typer.Option("--checkpointing", help="--memory with the model's grad checkpointing on (per block).")
    ] = False,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="Optimizer state for --memory: adamw or sgd.")
    ] = "adamw",
    spec_folder: SpecFolder = None,
) -> None:
    """Exact params and MACs per resolution, against the published numbers; with --memory, training memory.

    rel. err is (published - ours) / ours: positive when the source prints more than we count.
    """
    _use_specs(spec_folder)
    _check_memory_options(batch, dtype, optimizer)
    if by not in ("stage", "module", "op"):
        _fail(f"error: --by {by}: choose stage, module or op")
    if convention not in ("macs", "flops", "fvcore"):
        _fail(f"error: --convention {convention}: choose macs, flops or fvcore")
    from archgen import specs
    from archgen.build import compile_path
    from archgen.fidelity import checks, resolutions

    ir = compile_path(specs.find(spec))
    sizes = sorted(set(img_size)) if img_size else resolutions(ir)
    for size in img_size or ():
        ir.check_img_size(size)  # a size the spec cannot take is the option's error
    rows = []
    problems = 0
    for size in sizes:
        total = ir.count(size)
        found = checks(ir, size)
        problems += sum(not c.ok for c in found)
        rows.append((size, total, found))
    footprints = {size: ir.memory(size, batch, dtype, checkpointing, optimizer) for size in sizes} if memory else {}
    if as_json:
        payload = {
            "name": ir.spec.name,
            "counts": [
                {
                    "img_size": size,
                    "params": total.params,
                    "macs": total.macs,
                    "published": _published(found),
                    "convention": convention,
                    "value": total.in_convention(convention),
                    "by": by,
                    "breakdown": [
                        {"name": n, "params": node.params, "macs": node.macs, "value": node.in_convention(convention)}
                        for n, node in _breakdown(total, by)
                    ],
                }
                | ({"memory": footprints[size].as_dict()} if memory else {})
                for size, total, found in rows
            ],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_counts(ir, rows, by, convention)
        for size, footprint in footprints.items():
            _print_memory(size, footprint)
    if problems:
        raise typer.Exit(1)


@app.command()
@_guard
def sweep(
    spec: Annotated[str, typer.Argument(help="Spec name or file to vary.")],
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="PATH=V1,V2,... or PATH=LO..HI[:STEP] (repeatable): a field as `archgen show` prints the spec, "
            "list items by index or stages by key (stages.0.depth, stages.blocks.heads, stem.dim).",
        ),
    ] = None,
    max_params: Annotated[str | None, typer.Option("--max-params", help="Budget: parameters (86e6, 86M).")] = None,
    max_macs: Annotated[str | None, typer.Option("--max-macs", help="Budget: MACs (5e9, 5G).")] = None,
    max_memory: Annotated[
        str | None,
        typer.Option("--max-memory", help="Budget: bytes of one training step (16GiB, 16e9); needs --batch."),
    ] = None,
    batch: Annotated[
        int | None, typer.Option("--batch", help="Count training memory at this batch (see count --memory).")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Memory: float32, bfloat16 or float16.")] = "float32",
    checkpointing: Annotated[bool, typer.Option("--checkpointing", help="Memory with grad checkpointing.")] = False,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Memory: adamw or sgd optimizer state.")] = "adamw",
    img_size: Annotated[int | None, typer.Option("--img-size", help="Resolution (default: the spec's).")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows (and invalid combinations) shown; 0 shows all.")] = 25,
    as_json: Annotated[bool, typer.Option("--json", help="Every row, ranked, and every invalid combination.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write an SVG of params vs MACs with the frontier.")
    ] = None,
    emit: Annotated[
        int | None, typer.Option("--emit", help="Write row ROW as <spec>_sweep<ROW>.yaml (extends the spec).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for --emit.")] = Path("."),
    spec_folder: SpecFolder = None,
) -> None:
    """Count every combination of the --set values: validated like a spec, filtered by the budgets, ranked,
    the Pareto frontier (most parameters for the fewest MACs, and the least memory with --batch) marked."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.sweep import Budget, MemorySetting, SweepError, parse_number
    from archgen.sweep import sweep as run_sweep

    if max_memory is not None and batch is None:
        _fail("error: --max-memory needs --batch (training memory depends on it)")
    if batch is not None:
        _check_memory_options(batch, dtype, optimizer)
    if img_size is not None and img_size < 1:
        _fail(f"error: --img-size {img_size}: must be positive")
    try:
        budget = Budget(
            parse_number(max_params, "--max-params") if max_params else None,
            parse_number(max_macs, "--max-macs") if max_macs else None,
            parse_number(max_memory, "--max-memory") if max_memory else None,
        )
        memory = MemorySetting(batch, dtype, checkpointing, optimizer) if batch is not None else None
        loaded = specs.load(specs.find(spec))
        result = run_sweep(loaded, settings or [], img_size, budget, memory)
    except SweepError as exc:
        _fail(f"error: {exc}")
    if emit is not None:
        _emit_row(loaded, result, emit, out)
        return
    if plot is not None:
        from archgen.build import write_atomic
        from archgen.pictures import sweep_svg

        for target in write_atomic(Path("."), {plot.as_posix(): sweep_svg(result)}):
            typer.echo(f"wrote {target.as_posix()}", err=as_json)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        _print_sweep(result, top)


def _emit_row(loaded: Any, result: Any, index: int, out: Path) -> None:
    import yaml

    from archgen import specs
    from archgen.build import write_atomic
    from archgen.sweep import emit_data

    if not 1 <= index <= len(result.rows):
        _fail(f"error: --emit {index}: rows are numbered 1 to {len(result.rows)}")
    row = result.rows[index - 1]
    if row.reason is not None:
        _fail(f"error: --emit {index}: not a valid spec: {row.reason}")
    parent = loaded.spec.name
    if not (out / f"{parent}.yaml").is_file() and not any(
        (d / f"{parent}.yaml").is_file() for d in specs.search_dirs()
    ):
        _fail(f"error: --emit {index}: '{parent}' would not be found from {out.as_posix()}; write next to it (--out)")
    data = emit_data(loaded, result.axes, row)
    text = "# written by archgen sweep --emit\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    for target in write_atomic(out, {f"{data['name']}.yaml": text}):
        typer.echo(f"wrote {target.as_posix()}")


def _print_sweep(result: Any, top: int) -> None:
    from rich.table import Table

    console = _console()
    ranked = result.ranked()
    shown = ranked if top == 0 else ranked[:top]
    mem = result.memory is not None
    how = (
        f", memory at batch {result.memory.batch} {result.memory.dtype} {result.memory.optimizer}"
        + (" with checkpointing" if result.memory.checkpointing else "")
        if mem
        else ""
    )
    varied = [i for i, a in enumerate(result.axes) if len(a.values) > 1]
    fixed = ", ".join(f"{a.name}={a.values[0]}" for a in result.axes if len(a.values) == 1)
    limits = [
        f"{what} <= {value:,}"
        for what, value in (("params", result.budget.params), ("MACs", result.budget.macs))
        if value is not None
    ]
    if result.budget.memory is not None:
        limits.append(f"memory <= {_mib(result.budget.memory)} MiB")
    title = f"sweep of {result.spec} @{result.img_size or 'img_size'}{how}"
    title += f"; fixed: {fixed}" if fixed else ""
    title += f"; budget: {', '.join(limits)}" if limits else ""
    table = Table(title=title, title_justify="left")
    names = [result.axes[i].name for i in varied]
    for col in ("row", *names, "params", "MACs (G)", *(["memory (MiB)"] if mem else []), ""):
        table.add_column(col, justify="right" if col != "" else "left", min_width=len(col), no_wrap=True)
    for r in shown:
        cells = [str(r.index), *(str(r.values[i]) for i in varied), f"{r.params:,}", f"{r.macs / 1e9:.3f}"]
        cells += [_mib(r.memory_bytes)] if mem else []
        table.add_row(*cells, "frontier" if r.frontier else "")
    console.print(table)
    over = sum(not r.within for r in result.valid)
    frontier = sum(r.frontier for r in ranked)
    console.print(
        f"{len(result.rows):,} combinations: {len(result.valid):,} valid, {len(result.invalid):,} invalid, "
        f"{over:,} over budget, {len(ranked):,} within ({frontier:,} on the frontier); "
        f"shown {len(shown):,} (--top), ranked frontier first, then most parameters, fewest MACs"
    )
    bad = result.invalid if top == 0 else result.invalid[:top]
    for r in bad:
        values = ", ".join(f"{result.axes[i].name}={r.values[i]}" for i in varied)
        console.print(f"invalid row {r.index} ({values}): {r.reason}", markup=False)
    if len(bad) < len(result.invalid):
        console.print(f"... and {len(result.invalid) - len(bad):,} more invalid (--top 0 or --json lists all)")


def _check_memory_options(batch: int, dtype: str, optimizer: str) -> None:
    from archgen.memory import ITEMSIZE, OPTIMIZERS

    if batch < 1:
        _fail(f"error: --batch {batch}: must be positive")
    if dtype not in ITEMSIZE:
        _fail(f"error: --dtype {dtype}: choose {', '.join(ITEMSIZE)}")
    if optimizer not in OPTIMIZERS:
        _fail(f"error: --optimizer {optimizer}: choose {', '.join(OPTIMIZERS)}")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def _print_memory(size: int, fp: Any) -> None:
    from rich.table import Table

    console = _console()
    ckpt = "grad checkpointing" if fp.checkpointing else "no checkpointing"
    title = f"memory of one training step @{size}, batch {fp.batch}, {fp.dtype}, {fp.optimizer}, {ckpt}"
    table = Table(title=title, title_justify="left")
    for col in ("", "bytes", "MiB", "share"):
        table.add_column(col, justify="left" if not col else "right")
    parts = [
        ("parameters", fp.params_bytes),
        ("gradients", fp.grads_bytes),
        (f"optimizer state ({fp.optimizer})", fp.optimizer_bytes),
        ("activations saved for backward", fp.activation_bytes),
    ]
    whole = max(fp.total_bytes, 1)
    for name, n in [*parts, ("total", fp.total_bytes)]:
        table.add_row(name, f"{n:,}", _mib(n), f"{n / whole:.1%}")
    console.print(table)
    steps = Table(title=f"activations by stage @{size}", title_justify="left")
    for col in ("module", "kind", "blocks", "bytes per block", "bytes", "MiB", "share"):
        steps.add_column(col, justify="left" if col in ("module", "kind") else "right")
    acts = max(fp.activation_bytes, 1)
    for s in fp.steps:
        blocks, each = (str(len(s.per_block)), f"{s.per_block[-1]:,}") if s.per_block else ("", "")
        n = s.activation_bytes
        steps.add_row(s.name, s.kind, blocks, each, f"{n:,}", _mib(n), f"{n / acts:.1%}")
    console.print(steps)
    kinds = Table(title=f"activations by block kind @{size}", title_justify="left")
    for col in ("block kind", "blocks", "bytes", "MiB", "share"):
        kinds.add_column(col, justify="left" if col == "block kind" else "right")
    for kind, blocks, n in fp.by_kind():
        kinds.add_row(kind, str(blocks), f"{n:,}", _mib(n), f"{n / acts:.1%}")
    console.print(kinds)
    console.print(
        "activations are the storages autograd keeps for backward, exact for torch on CPU; a device's peak also "
        "holds temporaries inside ops and allocator rounding (README: Cost model)"
    )
    if fp.checkpointing:
        console.print(
            "with checkpointing a block keeps only its input; backward recomputes one block at a time, "
            f"so one block's activations ({_mib(fp.recompute_bytes)} MiB at most) are live again for a moment"
        )


def _published(found: list[Any]) -> dict[str, list[dict[str, Any]]] | None:
    if not found:
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for c in found:
        out.setdefault(c.entry.quantity, []).append(
            {
                "printed": c.entry.printed,
                "value": c.entry.value,
                "source": c.entry.source,
                "convention": c.entry.convention,
                "rel_err": round(c.rel_err, 6),
                "status": c.status,
                "deviation": c.entry.deviation,
            }
        )
    return out


def _console() -> Any:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1; the command's guard decides instead
            self.quiet = True
            raise BrokenPipeError

    # Piped output (CI logs, README snippets) gets a fixed width instead of rich's 80 columns.
    return _Console(highlight=False, width=None if sys.stdout.isatty() else 140)


# The sign of the relative error, spelt out where it is shown (Check.rel_err).
REL_ERR = "rel. err\n(pub-ours)/ours"


def _breakdown(total: Any, by: str) -> list[tuple[str, Any]]:
    """Rows of ``--by``: top-level attributes (stage), every node by its full dotted attribute path in the
    generated module, parents before children (module), or leaves summed by operation type (op)."""
    if by == "op":
        return list(total.by_op().items())
    if by == "module":
        return total.walk()[1:]
    return [(child.name, child) for child in total.children]


def _convention(entry: Any) -> str:
    return "" if entry.convention == "macs" else f"; {entry.convention} convention"


def _print_counts(ir: Any, rows: list[Any], by: str = "stage", convention: str = "macs") -> None:
    from rich.table import Table

    console = _console()
    spec = ir.spec
    table = Table(title=f"{spec.title} ({spec.name})", title_justify="left")
    for col in ("img", "params", "MACs (G)", "FLOPs = 2xMACs (G)", "published", REL_ERR, "status"):
        table.add_column(col, justify="left" if col in ("published", "status") else "right")
    for size, total, found in rows:
        first = True
        for c in found or [None]:
            cells = [str(size), f"{total.params:,}", f"{total.macs / 1e9:.3f}", f"{2 * total.macs / 1e9:.3f}"]
            if not first:
                cells = ["", "", "", ""]
            if c is None:
                cells += ["-", "", ""]
            else:
                cells += [
                    f"{c.entry.quantity} {c.entry.printed} ({c.entry.source}{_convention(c.entry)})",
                    f"{c.rel_err:+.2%}",
                    c.status,
                ]
            table.add_row(*cells)
            first = False
    console.print(table)
    for _size, _total, found in rows:
        for c in found:
            if c.entry.deviation:
                console.print(
                    f"[bold]deviation[/bold] @{c.entry.img_size} {c.entry.quantity} {c.entry.printed}: "
                    f"{c.entry.deviation}",
                    markup=True,
                )
    size, total, _ = rows[0]
    label = {"macs": "MACs", "flops": "FLOPs (2 x MACs)", "fvcore": "fvcore (MACs + norm terms)"}[convention]
    parts = Table(title=f"breakdown by {by} @{size}", title_justify="left")
    first_col = {"op": "op", "module": "path", "stage": "module"}[by]
    for col in (first_col, "params", label, "share"):
        parts.add_column(col, justify="left" if col == first_col else "right")
    whole = max(total.in_convention(convention), 1)
    for name, node in _breakdown(total, by):
        value = node.in_convention(convention)
        parts.add_row(name, f"{node.params:,}", f"{value:,}", f"{value / whole:.1%}")
    parts.add_row("total", f"{total.params:,}", f"{total.in_convention(convention):,}", "100.0%")
    console.print(parts)


@app.command()
@_guard
def show(
    spec: Annotated[str, typer.Argument(help="Spec name or file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    spec_folder: SpecFolder = None,
) -> None:
    """Print the resolved spec: every field after `extends:` is merged."""
    _use_specs(spec_folder)
    from archgen import specs

    loaded = specs.load(specs.find(spec))
    typer.echo(_resolved_text(loaded, as_json), nl=False)


def _kind_first(data: Any) -> Any:
    """Each part's ``kind`` before its other fields, as specs are written."""
    if isinstance(data, dict):
        return {k: _kind_first(v) for k, v in sorted(data.items(), key=lambda item: item[0] != "kind")}
    return [_kind_first(v) for v in data] if isinstance(data, list) else data


def _resolved_text(loaded: Any, as_json: bool = False) -> str:
    data = _kind_first(loaded.spec.model_dump(mode="json", exclude_defaults=False))
    if as_json:
        return json.dumps(data, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


@app.command()
@_guard
def diff(
    a: Annotated[str, typer.Argument(help="First spec (name or file).")],
    b: Annotated[str, typer.Argument(help="Second spec (name or file).")],
    spec_folder: SpecFolder = None,
) -> None:
    """Spec difference, generated-code difference and count delta between two specs."""
    _use_specs(spec_folder)
    import difflib

    from archgen import specs
    from archgen.compiler import resolve
    from archgen.emit import emit

    left, right = specs.load(specs.find(a)), specs.load(specs.find(b))
    for title, x, y in (
        ("spec (resolved)", _resolved_text(left), _resolved_text(right)),
        ("generated code", *[next(iter(emit(resolve(s)).values())) for s in (left, right)]),
    ):
        typer.echo(f"=== {title}")
        lines = difflib.unified_diff(
            x.splitlines(keepends=True), y.splitlines(keepends=True), left.spec.name, right.spec.name
        )
        typer.echo("".join(lines), nl=False)
    typer.echo("=== counts")
    ir_a, ir_b = resolve(left), resolve(right)
    for size in sorted({left.spec.img_size, right.spec.img_size}):
        ca, cb = ir_a.count(size), ir_b.count(size)
        typer.echo(
            f"@{size}: params {ca.params:,} -> {cb.params:,} ({cb.params - ca.params:+,}, "
            f"{(cb.params - ca.params) / ca.params:+.1%}); MACs {ca.macs:,} -> {cb.macs:,} "
            f"({cb.macs - ca.macs:+,}, {(cb.macs - ca.macs) / ca.macs:+.1%})"
        )


@app.command()
@_guard
def plot(
    out: Annotated[Path, typer.Option("--out", "-o", help="SVG file to write.")] = Path("archgen-plot.svg"),
    spec_folder: SpecFolder = None,
) -> None:
    """Write an SVG chart of params vs MACs for every spec, published points beside computed ones."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import compile_path, write_atomic
    from archgen.pictures import plot_svg

    svg = plot_svg([compile_path(p) for p in specs.all_paths()])
    for target in write_atomic(Path("."), {out.as_posix(): svg}):
        typer.echo(f"wrote {target.as_posix()}")


@app.command()
@_guard
def diagram(
    spec: Annotated[str, typer.Argument(help="Spec name or file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="SVG file (default: <name>.svg).")] = None,
    spec_folder: SpecFolder = None,
) -> None:
    """Write an SVG of one spec's stage/block graph with token grids and widths."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import compile_path, write_atomic
    from archgen.pictures import diagram_svg

    ir = compile_path(specs.find(spec))
    target = out or Path(f"{ir.spec.name}.svg")
    for written in write_atomic(Path("."), {target.as_posix(): diagram_svg(ir)}):
        typer.echo(f"wrote {written.as_posix()}")


@app.command()
@_guard
def schema() -> None:
    """Print the spec's JSON Schema (committed as specs/schema.json for editors)."""
    from archgen.docs import json_schema

    typer.echo(json_schema(), nl=False)


@app.command("list")
@_guard
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    fidelity: Annotated[
        bool, typer.Option("--fidelity", help="Every published number vs our count, as a Markdown table.")
    ] = False,
    spec_folder: SpecFolder = None,
) -> None:
    """Every spec with its family, params and MACs at its default resolution, and published numbers."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import compile_path
    from archgen.fidelity import checks, markdown_table

    if fidelity:
        typer.echo(markdown_table([compile_path(p) for p in specs.all_paths()]), nl=False)
        return

    items = []
    for path in specs.all_paths():
        ir = compile_path(path)
        total = ir.count(ir.spec.img_size)
        found = checks(ir, ir.spec.img_size)
        items.append(
            {
                "name": ir.spec.name,
                "family": ir.spec.family,
                "img_size": ir.spec.img_size,
                "params": total.params,
                "macs": total.macs,
                "published": _published(found),
            }
        )
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    from rich.table import Table

    table = Table()
    for col in ("name", "family", "img", "params (M)", "MACs (G)", "published @ default"):
        table.add_column(col, justify="left" if col in ("name", "family", "published @ default") else "right")
    for it in items:
        pub = it["published"] or {}
        text = ", ".join(f"{q} {e['printed']} ({e['status']})" for q, es in pub.items() for e in es)
        table.add_row(
            it["name"],
            it["family"],
            str(it["img_size"]),
            f"{it['params'] / 1e6:.2f}",
            f"{it['macs'] / 1e9:.2f}",
            text or "-",
        )
    _console().print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
