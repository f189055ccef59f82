"""Command line: ``archgen build | check | count | list``. Exit 0 ok, 1 problem found, 2 bad input.

Only the standard library, typer and the compiler are imported at start-up; torch never is, and
Jinja only by the commands that render code.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from archgen import __version__
from archgen.geometry import Size, parse_size, size_text, size_value

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compile vision-transformer specs into standalone PyTorch modules and count them exactly.",
)
_state = {"debug": False}
# sweep: the default cap on combinations (about 20 s of counting here; --max-combinations raises it up to the
# hard limit), and from how many rows progress is shown on a terminal / logged when stderr is a file
DEFAULT_MAX_COMBINATIONS = 100_000
HARD_MAX_COMBINATIONS = 1_000_000  # every row is kept (ranked, plotted): about 0.5 GB at this size
PROGRESS_ROWS = 2_000
LOG_ROWS = 20_000


def _fail(message: str, code: int = 2) -> NoReturn:
    from archgen.printable import one_line

    typer.echo(one_line(message), err=True)
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
    from archgen.specset import FolderError

    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, SystemExit, BrokenPipeError):
        raise
    except (SpecError, FolderError) as exc:
        if _state["debug"]:
            raise
        _fail(f"error: {exc}")
    except OSError as exc:  # a file or folder named on the command line: bad input, not a bug
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"error: {where}{exc.strerror or exc}")
    except Exception as exc:  # an internal error: one line and a hint, never a traceback
        if _state["debug"]:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


def _safe(text: str) -> str:
    """Free text (a spec's strings, a path) as it may reach a terminal: control characters escaped."""
    from archgen.printable import printable

    return printable(text)


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


def _report(errors: list[str]) -> None:
    """Every bad spec, one line each as a linter reports them (the command goes on with the others)."""
    for line in errors:
        typer.echo(_safe(f"error: {line}"), err=True)


def _docs_for(folder: Path) -> dict[str, str]:
    """What the editor and the reader need next to a spec folder: the JSON Schema every spec's header points
    at (``# yaml-language-server: $schema=schema.json``) and, for the built-in library, the field reference
    (a user's folder gets the schema only: its README.md is the user's own)."""
    from archgen import specs
    from archgen.docs import emit_docs, json_schema

    if folder.resolve() == specs.builtin_dir().resolve():
        return {Path(name).name: text for name, text in emit_docs().items()}
    return {"schema.json": json_schema()}


def _docs_folder(out: Path) -> Path | None:
    """Where ``build --all`` writes the docs: the user's spec folder, or the library's when it lies under
    ``out`` (a checkout); an installed library is never written into."""
    from archgen import specs
    from archgen.specset import user_folder

    folder = user_folder()
    if folder is not None:
        return folder
    return specs.builtin_dir() if (out / "specs").resolve() == specs.builtin_dir().resolve() else None


@app.command()
@_guard
def build(
    spec: Annotated[list[str] | None, typer.Argument(help="Spec files or names.")] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Build every spec in the spec folder (see --specs) and write its schema.json; a bad spec is "
            "reported and written nothing, the others are written, exit 2.",
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder that holds generated/.")] = Path("."),
    spec_folder: SpecFolder = None,
) -> None:
    """Write <out>/generated/<name>.py for each spec (named specs: all rendered and checked before any is
    written; --all: every good spec written, every bad one reported)."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import render_all, write_atomic

    _output_folder(out, "--out")
    if not all_:
        if not spec:
            _fail("error: name specs to build, or pass --all")
        files = render_all([specs.find(item) for item in spec])
        for target in write_atomic(out, files):
            typer.echo(_safe(f"wrote {target.as_posix()}"))
        return
    if spec:
        _fail("error: name specs or pass --all, not both")
    files, errors = _render_folder()
    docs = _docs_folder(out)
    written = write_atomic(out, files)
    if docs is not None:
        written += write_atomic(docs, _docs_for(docs))
    for target in written:
        typer.echo(_safe(f"wrote {target.as_posix()}"))
    _report(errors)
    if errors:
        typer.echo(f"{len(errors)} bad spec(s): nothing written for them", err=True)
        raise typer.Exit(2)


def _render_folder() -> tuple[dict[str, str], list[str]]:
    """The generated files of every good spec of the spec folder, and one error line per bad one."""
    from archgen.build import compile_path
    from archgen.emit import emit
    from archgen.specset import each, own

    outcome = each(own(), lambda path: emit(compile_path(path)))
    files: dict[str, str] = {}
    for _entry, rendered in outcome.done:
        files |= rendered  # one file per spec, named after its (unique) file stem
    return files, outcome.errors


@app.command()
@_guard
def check(
    root: Annotated[Path, typer.Option("--out", "--root", help="Folder that holds generated/.")] = Path("."),
    spec_folder: SpecFolder = None,
) -> None:
    """Exit 0 if <out>/generated/ (and the spec folder's schema.json) is exactly what the spec folder's specs
    produce; else print the diff, exit 1. Bad specs are reported, one line each, exit 2."""
    _use_specs(spec_folder)
    from archgen.build import drift

    expected, errors = _render_folder()
    docs = _docs_folder(root)
    if docs is not None:
        user = docs == _user_folder()
        for name, text in _docs_for(docs).items():
            # the library's docs are part of it; a user's schema.json is checked once build --all wrote it
            if not user or (docs / name).is_file():
                expected[Path(os.path.relpath(docs / name, root)).as_posix()] = text
    problems = drift(root, expected)
    for problem in problems:
        typer.echo(_safe(problem))
    _report(errors)
    if errors:
        raise typer.Exit(2)
    if problems:
        typer.echo(f"{len(problems)} file(s) out of date; run: archgen build --all", err=True)
        raise typer.Exit(1)
    typer.echo(f"generated/ is up to date ({len(expected)} files)")


def _user_folder() -> Path | None:
    from archgen.specset import user_folder

    return user_folder()


def _output_folder(path: Path, option: str) -> None:
    """A folder to write into must be a folder or not exist yet (it is made)."""
    if path.exists() and not path.is_dir():
        _fail(f"error: {option} {path.as_posix()}: not a folder")


PICTURE_SUFFIXES = (".svg", ".png", ".pdf")


def _output_file(path: Path, option: str, suffixes: tuple[str, ...] = PICTURE_SUFFIXES) -> None:
    """A file to write must not be a folder, must sit in a folder, and (a picture) end in a known suffix."""
    if path.is_dir() or path.name in ("", ".", ".."):
        _fail(f"error: {option} {path.as_posix()}: a folder; name the file to write")
    if path.parent.exists() and not path.parent.is_dir():
        _fail(f"error: {option} {path.as_posix()}: {path.parent.as_posix()} is not a folder")
    if path.suffix.lower() not in suffixes:
        _fail(f"error: {option} {path.as_posix()}: write {', '.join(suffixes)}")


def _write_picture(path: Path, svg: str, quiet: bool = False) -> None:
    """The SVG as written, or rendered to PNG or PDF (by the suffix), atomically."""
    from archgen.build import write_atomic

    if path.suffix.lower() == ".svg":
        written = write_atomic(Path("."), {path.as_posix(): svg})
    else:
        from archgen.render import render

        written = write_atomic(Path("."), {path.as_posix(): render(svg, path.suffix.lower()[1:])})
    for target in written:
        typer.echo(_safe(f"wrote {target.as_posix()}"), err=quiet)


@app.command()
@_guard
def count(
    spec: Annotated[str, typer.Argument(help="Spec name or file.")],
    img_size: Annotated[
        list[str] | None,
        typer.Option("--img-size", help="Resolution(s) to count (repeatable): 224 (a square) or HxW, e.g. 224x320."),
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
    batch: Annotated[int | None, typer.Option("--batch", help="Batch size for --memory (default 1).")] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="Dtype the module is cast to for --memory: float32 (default), bfloat16, float16."),
    ] = None,
    checkpointing: Annotated[
        bool, typer.Option("--checkpointing", help="--memory with the model's grad checkpointing on (per block).")
    ] = False,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help="Optimizer state for --memory: adamw (default) or sgd.")
    ] = None,
    amp: Annotated[
        str | None,
        typer.Option(
            "--amp",
            help="--memory of mixed precision: float32 weights, gradients and optimizer state, the forward under "
            "torch.autocast in bf16 or fp16 (instead of --dtype).",
        ),
    ] = None,
    spec_folder: SpecFolder = None,
) -> None:
    """Exact params and MACs per resolution, against the published numbers; with --memory, training memory.

    rel. err is (published - ours) / ours: positive when the source prints more than we count.
    """
    _use_specs(spec_folder)
    options = (("--batch", batch), ("--dtype", dtype), ("--optimizer", optimizer), ("--amp", amp))
    given = [o for o, v in options if v is not None]
    given += ["--checkpointing"] if checkpointing else []
    if given and not memory:
        _fail(f"error: {', '.join(given)}: only with --memory (they describe the training step it counts)")
    batch, dtype, optimizer = batch or 1, dtype or "float32", optimizer or "adamw"
    _check_memory_options(batch, dtype, optimizer, amp)
    given_sizes = [_img_size(text) for text in img_size or []]
    if by not in ("stage", "module", "op"):
        _fail(f"error: --by {by}: choose stage, module or op")
    if convention not in ("macs", "flops", "fvcore"):
        _fail(f"error: --convention {convention}: choose macs, flops or fvcore")
    from archgen import specs
    from archgen.build import compile_path
    from archgen.fidelity import checks, resolutions

    ir = compile_path(specs.find(spec))
    sizes = sorted(set(given_sizes)) if given_sizes else resolutions(ir)
    for size in given_sizes:
        ir.check_img_size(size)  # a size the spec cannot take is the option's error
    rows = []
    problems = 0
    for size in sizes:
        total = ir.count(size)
        found = checks(ir, size)
        problems += sum(not c.ok for c in found)
        rows.append((size, total, found))
    footprints = (
        {size: ir.memory(size, batch, dtype, checkpointing, optimizer, amp) for size in sizes} if memory else {}
    )
    if as_json:
        payload = {
            "name": ir.spec.name,
            "counts": [
                {
                    "img_size": size_value(size),
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
        typer.echo(_json(payload))
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
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="Memory (with --batch): float32 (default), bfloat16 or float16.")
    ] = None,
    checkpointing: Annotated[
        bool, typer.Option("--checkpointing", help="Memory (with --batch) with grad checkpointing.")
    ] = False,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help="Memory (with --batch): adamw (default) or sgd optimizer state.")
    ] = None,
    amp: Annotated[
        str | None, typer.Option("--amp", help="Memory (with --batch) under torch.autocast: bf16 or fp16.")
    ] = None,
    img_size: Annotated[
        str | None, typer.Option("--img-size", help="Resolution: 224 or HxW, e.g. 224x320 (default: the spec's).")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Rows (and invalid combinations) shown; 0 shows all.")] = 25,
    as_json: Annotated[bool, typer.Option("--json", help="Every row, ranked, and every invalid combination.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a chart of params vs MACs with the frontier (.svg, .png or .pdf)."),
    ] = None,
    max_combinations: Annotated[
        int,
        typer.Option(
            "--max-combinations",
            help="Refuse a sweep of more combinations than this (about 5,000 a second are counted).",
        ),
    ] = DEFAULT_MAX_COMBINATIONS,
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
    given = [o for o, v in (("--dtype", dtype), ("--optimizer", optimizer), ("--amp", amp)) if v is not None]
    given += ["--checkpointing"] if checkpointing else []
    if given and batch is None:
        _fail(f"error: {', '.join(given)}: only with --batch (they describe the training step it counts)")
    dtype, optimizer = dtype or "float32", optimizer or "adamw"
    if batch is not None:
        _check_memory_options(batch, dtype, optimizer, amp)
    size = _img_size(img_size) if img_size is not None else None
    _in_range("--top", top, 0, 10**9)
    _in_range("--max-combinations", max_combinations, 1, HARD_MAX_COMBINATIONS)
    if emit is not None:
        _in_range("--emit", emit, 1, max_combinations)
        _output_folder(out, "--out")
    if plot is not None:
        _output_file(plot, "--plot")
    try:
        budget = Budget(
            parse_number(max_params, "--max-params") if max_params else None,
            parse_number(max_macs, "--max-macs") if max_macs else None,
            parse_number(max_memory, "--max-memory") if max_memory else None,
        )
        memory = MemorySetting(batch, dtype, checkpointing, optimizer, amp) if batch is not None else None
        loaded = specs.load(specs.find(spec))
        with _progress() as tick:
            result = run_sweep(loaded, settings or [], size, budget, memory, max_combinations, tick)
    except SweepError as exc:
        _fail(f"error: {exc}")
    if emit is not None:
        _emit_row(loaded, result, emit, out)
        return
    if plot is not None:
        from archgen.pictures import sweep_svg

        _write_picture(plot, sweep_svg(result), quiet=as_json)
    if as_json:
        typer.echo(_json(result.as_dict()))
    else:
        _print_sweep(result, top)


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[int, int], None]]:
    """A sweep's progress on stderr: a rich bar on a terminal once a sweep is long enough to wait for; when
    stderr is a file, a plain line every tenth of a long sweep (stdout and --json stay clean)."""
    import time

    state: dict[str, Any] = {"bar": None, "shown": 0}
    start = time.monotonic()
    terminal = sys.stderr.isatty()

    def tick(done: int, total: int) -> None:
        if terminal and total >= PROGRESS_ROWS:
            if state["bar"] is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

                bar = Progress(
                    "counting combinations", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True,
                )  # fmt: skip
                state["bar"], state["task"] = bar, bar.add_task("sweep", total=total)
                bar.start()
            state["bar"].update(state["task"], completed=done)
        elif not terminal and total >= LOG_ROWS and done * 10 // total > state["shown"]:
            state["shown"] = done * 10 // total
            took = time.monotonic() - start
            typer.echo(f"sweep: {done:,} of {total:,} combinations counted ({took:.0f} s)", err=True)

    try:
        yield tick
    finally:
        if state["bar"] is not None:
            state["bar"].stop()


def _emit_row(loaded: Any, result: Any, index: int, out: Path) -> None:
    from archgen import specs
    from archgen.build import write_atomic
    from archgen.sweep import emit_text

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
    name, text = emit_text(loaded, result.axes, row)
    _output_file(out / name, "--emit", (".yaml",))
    for target in write_atomic(out, {name: text}):
        typer.echo(_safe(f"wrote {target.as_posix()}"))


def _print_sweep(result: Any, top: int) -> None:
    from rich.table import Table

    from archgen.sweep import value_text

    console = _console()
    ranked = result.ranked()
    shown = ranked if top == 0 else ranked[:top]
    mem = result.memory is not None
    how = (
        f", memory at batch {result.memory.batch} {result.memory.precision} {result.memory.optimizer}"
        + (" with checkpointing" if result.memory.checkpointing else "")
        if mem
        else ""
    )
    varied = [i for i, a in enumerate(result.axes) if len(a.values) > 1]
    fixed = ", ".join(f"{a.name}={value_text(a.values[0])}" for a in result.axes if len(a.values) == 1)
    limits = [
        f"{what} <= {value:,}"
        for what, value in (("params", result.budget.params), ("MACs", result.budget.macs))
        if value is not None
    ]
    if result.budget.memory is not None:
        limits.append(f"memory <= {_mib(result.budget.memory)} MiB")
    title = f"sweep of {result.spec} @{size_text(result.img_size) if result.img_size else 'img_size'}{how}"
    title += f"; fixed: {fixed}" if fixed else ""
    title += f"; budget: {', '.join(limits)}" if limits else ""
    table = Table(title=title, title_justify="left")
    names = [result.axes[i].name for i in varied]
    for col in ("row", *names, "params", "MACs (G)", *(["memory (MiB)"] if mem else []), ""):
        table.add_column(col, justify="right" if col != "" else "left", min_width=len(col), no_wrap=True)
    for r in shown:
        cells = [str(r.index), *(value_text(r.values[i]) for i in varied), f"{r.params:,}", f"{r.macs / 1e9:.3f}"]
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
        values = ", ".join(f"{result.axes[i].name}={value_text(r.values[i])}" for i in varied)
        console.print(f"invalid row {r.index} ({values}): {r.reason}")
    if len(bad) < len(result.invalid):
        console.print(f"... and {len(result.invalid) - len(bad):,} more invalid (--top 0 or --json lists all)")


# Bounds of the numeric options: far beyond any real use, small enough that no count takes long or
# overflows a fixed-width integer on the way (a batch of 10**19 did).
MAX_BATCH = 2**20


def _in_range(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        _fail(f"error: {option} {value}: must be between {low:,} and {high:,}")


def _img_size(text: str) -> Size:
    """``--img-size 224`` (a square) or ``224x320`` (H x W)."""
    from archgen.schema import MAX_IMG_SIZE  # the largest a spec may name too

    size = parse_size(text)
    if size is None:
        _fail(f"error: --img-size {text}: write one side (224, a square) or HxW (224x320)")
    for side in size:
        _in_range("--img-size", side, 1, MAX_IMG_SIZE)
    return size


def _json(data: Any) -> str:
    """JSON as the standard defines it: a number that is not finite (a relative error against 0) is null."""
    import math

    def finite(node: Any) -> Any:
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, dict):
            return {k: finite(v) for k, v in node.items()}
        return [finite(v) for v in node] if isinstance(node, (list, tuple)) else node

    return json.dumps(finite(data), indent=2, allow_nan=False)


def _check_memory_options(batch: int, dtype: str, optimizer: str, amp: str | None = None) -> None:
    from archgen.memory import AMP, ITEMSIZE, OPTIMIZERS

    _in_range("--batch", batch, 1, MAX_BATCH)
    if dtype not in ITEMSIZE:
        _fail(f"error: --dtype {dtype}: choose {', '.join(ITEMSIZE)}")
    if amp is not None and amp not in AMP:
        _fail(f"error: --amp {amp}: choose {', '.join(AMP)}")
    if amp is not None and dtype != "float32":
        _fail(
            f"error: --amp {amp} keeps the weights in float32 (torch.autocast); --dtype {dtype} casts them: choose one"
        )
    if optimizer not in OPTIMIZERS:
        _fail(f"error: --optimizer {optimizer}: choose {', '.join(OPTIMIZERS)}")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def _print_memory(size: Size, fp: Any) -> None:
    from rich.table import Table

    console = _console()
    ckpt = "grad checkpointing" if fp.checkpointing else "no checkpointing"
    title = f"memory of one training step @{size_text(size)}, batch {fp.batch}, {fp.precision}, {fp.optimizer}, {ckpt}"
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
    steps = Table(title=f"activations by stage @{size_text(size)}", title_justify="left")
    for col in ("module", "kind", "blocks", "bytes per block", "bytes", "MiB", "share"):
        steps.add_column(col, justify="left" if col in ("module", "kind") else "right")
    acts = max(fp.activation_bytes, 1)
    for s in fp.steps:
        blocks, each = (str(len(s.per_block)), f"{s.per_block[-1]:,}") if s.per_block else ("", "")
        n = s.activation_bytes
        steps.add_row(s.name, s.kind, blocks, each, f"{n:,}", _mib(n), f"{n / acts:.1%}")
    console.print(steps)
    kinds = Table(title=f"activations by block kind @{size_text(size)}", title_justify="left")
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
                "rel_err": round(c.rel_err, 6),  # null where not finite (a source printing a number we count as 0)
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

        def render_str(self, text: str, **kwargs: Any) -> Any:  # every str a table or print shows
            return super().render_str(_safe(text), **kwargs)

    # Piped output (CI logs, README snippets) gets a fixed width instead of rich's 80 columns. A spec's text
    # is shown as written: no markup (`[red]`, `[/]`), no emoji codes, no highlighting.
    return _Console(highlight=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 140)


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
    from rich.text import Text

    console = _console()
    spec = ir.spec
    table = Table(title=f"{spec.title} ({spec.name})", title_justify="left")
    for col in ("img", "params", "MACs (G)", "FLOPs = 2xMACs (G)", "published", REL_ERR, "status"):
        table.add_column(col, justify="left" if col in ("published", "status") else "right")
    for size, total, found in rows:
        first = True
        for c in found or [None]:
            cells = [size_text(size), f"{total.params:,}", f"{total.macs / 1e9:.3f}", f"{2 * total.macs / 1e9:.3f}"]
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
                    Text.assemble(
                        ("deviation", "bold"),
                        _safe(
                            f" @{size_text(c.entry.img_size)} {c.entry.quantity} {c.entry.printed}: {c.entry.deviation}"
                        ),
                    )
                )
    size, total, _ = rows[0]
    label = {"macs": "MACs", "flops": "FLOPs (2 x MACs)", "fvcore": "fvcore (MACs + norm terms)"}[convention]
    parts = Table(title=f"breakdown by {by} @{size_text(size)}", title_justify="left")
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
    text = _resolved_text(loaded, as_json)  # YAML escapes control characters itself, bar bidi overrides
    typer.echo(text if as_json else _safe(text), nl=False)


def _kind_first(data: Any) -> Any:
    """Each part's ``kind`` before its other fields, as specs are written."""
    if isinstance(data, dict):
        return {k: _kind_first(v) for k, v in sorted(data.items(), key=lambda item: item[0] != "kind")}
    return [_kind_first(v) for v in data] if isinstance(data, list) else data


def _resolved_text(loaded: Any, as_json: bool = False) -> str:
    data = _kind_first(loaded.spec.model_dump(mode="json", exclude_defaults=False))
    if as_json:
        return _json(data) + "\n"
    from archgen.loader import dump_yaml

    return dump_yaml(data)


@app.command()
@_guard
def diff(
    a: Annotated[str, typer.Argument(help="First spec (name or file).")],
    b: Annotated[str, typer.Argument(help="Second spec (name or file).")],
    spec_folder: SpecFolder = None,
) -> None:
    """Count delta, spec difference and generated-code difference between two specs (A -> B)."""
    _use_specs(spec_folder)
    import difflib

    from archgen import specs
    from archgen.compiler import resolve
    from archgen.emit import emit

    left, right = specs.load(specs.find(a)), specs.load(specs.find(b))
    ir_a, ir_b = resolve(left), resolve(right)
    typer.echo(_safe(f"=== counts ({left.spec.name} -> {right.spec.name})"))
    for size in sorted({left.spec.img_size, right.spec.img_size}):
        ca, cb = ir_a.count(size), ir_b.count(size)
        typer.echo(f"@{size_text(size)}: params {_delta(ca.params, cb.params)}; MACs {_delta(ca.macs, cb.macs)}")
    for title, x, y in (
        ("spec (resolved)", _resolved_text(left), _resolved_text(right)),
        ("generated code", *[next(iter(emit(ir).values())) for ir in (ir_a, ir_b)]),
    ):
        typer.echo(f"=== {title}")
        lines = difflib.unified_diff(
            x.splitlines(keepends=True), y.splitlines(keepends=True), left.spec.name, right.spec.name
        )
        typer.echo(_safe("".join(lines)), nl=False)


def _delta(a: int, b: int) -> str:
    """``a -> b (+change, +relative)``; no relative change from 0."""
    relative = f", {(b - a) / a:+.1%}" if a else ""
    return f"{a:,} -> {b:,} ({b - a:+,}{relative})"


@app.command()
@_guard
def plot(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .svg, .png or .pdf (by its suffix).")] = Path(
        "archgen-plot.svg"
    ),
    spec_folder: SpecFolder = None,
) -> None:
    """Write a chart of params vs MACs for every spec (yours and the built-in ones), published points beside
    computed ones. A bad spec is reported and left out (exit 2)."""
    _use_specs(spec_folder)
    from archgen.build import compile_path
    from archgen.pictures import plot_svg
    from archgen.specset import each, everything

    _output_file(out, "--out")
    outcome = each(everything(), compile_path)
    if not outcome.done:
        _report(outcome.errors)
        _fail("error: no spec to plot")
    _write_picture(out, plot_svg([ir for _, ir in outcome.done], yours={e.name for e, _ in outcome.done if e.user}))
    _report(outcome.errors)
    if outcome.errors:
        raise typer.Exit(2)


@app.command()
@_guard
def diagram(
    spec: Annotated[str, typer.Argument(help="Spec name or file.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write: .svg (default <name>.svg), .png or .pdf.")
    ] = None,
    spec_folder: SpecFolder = None,
) -> None:
    """Write a picture of one spec's stage/block graph with token grids and widths."""
    _use_specs(spec_folder)
    from archgen import specs
    from archgen.build import compile_path
    from archgen.pictures import diagram_svg

    if out is not None:
        _output_file(out, "--out")
    ir = compile_path(specs.find(spec))
    target = out or Path(f"{ir.spec.name}.svg")
    _output_file(target, "--out")
    _write_picture(target, diagram_svg(ir))


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
    """Every spec, yours and the built-in ones (marked), with its family, params and MACs at its default
    resolution, and published numbers. A bad spec is reported, one line each, and the others listed (exit 2)."""
    _use_specs(spec_folder)
    from archgen.build import compile_path
    from archgen.fidelity import checks, markdown_table
    from archgen.specset import each, everything, user_folder

    outcome = each(everything(), compile_path)
    if fidelity:
        typer.echo(_safe(markdown_table([ir for _, ir in outcome.done])), nl=False)
    items = []
    for entry, ir in [] if fidelity else outcome.done:
        total = ir.count(ir.spec.img_size)
        found = checks(ir, ir.spec.img_size)
        items.append(
            {
                "name": ir.spec.name,
                "family": ir.spec.family,
                "img_size": size_value(ir.spec.img_size),
                "params": total.params,
                "macs": total.macs,
                "published": _published(found),
                "from": entry.origin,  # built-in, or the user's folder (and whether it overrides a built-in)
                "overrides_builtin": entry.overrides,
            }
        )
    if as_json:
        typer.echo(_json(items))
    elif not fidelity:
        _print_list(items, mine=user_folder() is not None)
    _report(outcome.errors)
    if outcome.errors:
        raise typer.Exit(2)


def _print_list(items: list[dict[str, Any]], mine: bool) -> None:
    from rich.table import Table

    table = Table()
    columns = ("name", *(["from"] if mine else []), "family", "img", "params (M)", "MACs (G)", "published @ default")
    for col in columns:
        table.add_column(col, justify="right" if col in ("img", "params (M)", "MACs (G)") else "left")
    for it in items:
        pub = it["published"] or {}
        text = ", ".join(f"{q} {e['printed']} ({e['status']})" for q, es in pub.items() for e in es)
        table.add_row(
            it["name"],
            *([it["from"]] if mine else []),
            it["family"],
            size_text(it["img_size"]),
            f"{it['params'] / 1e6:.2f}",
            f"{it['macs'] / 1e9:.2f}",
            text or "-",
        )
    _console().print(table)


def main() -> None:
    from typer._click import exceptions as click

    args = sys.argv[1:]
    try:
        code = app(args, standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help())
        sys.exit(2)
    except click.ClickException as exc:  # bad usage: one line as every other error, not typer's box
        from archgen.printable import one_line

        typer.echo(one_line(f"error: {_usage(exc, args)}"), err=True)
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _usage(exc: Any, args: list[str]) -> str:
    """Click's usage error as ``--option VALUE: what is wrong`` (the value as the user typed it)."""
    from typer._click import exceptions as click

    message = exc.format_message()
    param = getattr(exc, "param", None)
    if (
        not isinstance(exc, click.BadParameter)
        or isinstance(exc, click.MissingParameter)
        or not getattr(param, "opts", None)
        or not param.opts[0].startswith("-")
    ):
        return message[:1].lower() + message[1:]
    reason = message.split(": ", 1)[-1]
    reason = {
        "Input should be a valid integer, unable to parse string as an integer": "not an integer",
        "Input should be a valid number, unable to parse string as a number": "not a number",
    }.get(reason, reason[:1].lower() + reason[1:].rstrip("."))
    given = []  # the values the user gave this option (--opt V or --opt=V)
    for i, arg in enumerate(args):
        for opt in param.opts:
            if arg == opt and i + 1 < len(args):
                given.append(args[i + 1])
            elif arg.startswith(f"{opt}="):
                given.append(arg.split("=", 1)[1])
    bad = next((v for v in given if not _number(v)), given[-1] if given else "")
    return f"{param.opts[0]} {bad}: {reason}" if bad else f"{param.opts[0]}: {reason}"


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
