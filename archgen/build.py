"""The file-system side of the compiler: load, emit everything in memory, then write atomically."""

from __future__ import annotations

import difflib
import os
import stat
import tempfile
from pathlib import Path

from archgen import specs
from archgen.compiler import IR, resolve


def compile_path(path: Path) -> IR:
    return resolve(specs.load(path))


def render_all(paths: list[Path], docs: bool = False) -> dict[str, str]:
    """Every output, rendered and checked in memory; raises before anything is written.

    ``docs`` adds the spec language's JSON Schema and field reference (``build --all``, ``check``).
    """
    from archgen.docs import emit_docs
    from archgen.emit import emit

    out: dict[str, str] = emit_docs() if docs else {}
    for path in paths:
        for name, text in emit(compile_path(path)).items():
            if name in out:
                raise ValueError(f"two specs write {name}")
            out[name] = text
    return out


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _mode_for(target: Path) -> int:
    """The mode a plain ``open(target, "w")`` would leave: an existing file keeps its own, a new one gets
    0o666 less the umask (``mkstemp`` alone would give 0o600)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def write_atomic(root: Path, files: dict[str, str] | dict[str, bytes]) -> list[Path]:
    """Each file written to a temporary file beside it, then renamed over it (text as UTF-8, bytes as is)."""
    written = []
    for name, text in sorted(files.items()):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, mode)
            if isinstance(text, bytes):
                with os.fdopen(fd, "wb") as fh:
                    fh.write(text)
            else:
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                    fh.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def drift(root: Path, expected: dict[str, str]) -> list[str]:
    """Unified diffs for stale and missing files, and a note for each extra file in generated/."""
    problems: list[str] = []
    for name, text in sorted(expected.items()):
        target = root / name
        actual = target.read_text(encoding="utf-8") if target.is_file() else None
        if actual == text:
            continue
        if actual is None:
            problems.append(f"missing: {name} (run: archgen build --all)")
            continue
        diff = difflib.unified_diff(
            actual.splitlines(keepends=True), text.splitlines(keepends=True), f"a/{name}", f"b/{name}"
        )
        problems.append("".join(diff))
    generated = root / "generated"
    if generated.is_dir():
        for extra in sorted(generated.glob("*.py")):
            name = extra.relative_to(root).as_posix()
            if name not in expected:
                problems.append(f"extra: {name} (no spec produces it)")
    return problems
