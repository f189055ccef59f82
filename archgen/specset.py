"""The specs a command works on: the user's spec folder added to the built-in library, and per-file errors.

``list`` and ``plot`` show both, a user's spec with a built-in's name in place of the built-in one (as a name
is looked up: the user's folder first). ``build --all`` and ``check`` work on the user's folder alone (its
``generated/`` is the user's project), or on the library when there is no user folder. A bad file is one
error line, as a linter reports it; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from archgen import specs
from archgen.errors import SpecError

T = TypeVar("T")
BUILTIN = "built-in"


@dataclass(frozen=True)
class Entry:
    path: Path
    user: bool  # from the user's spec folder (else the built-in library)
    overrides: bool = False  # a user's spec with the name of a built-in one, which it hides

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def origin(self) -> str:
        """Where the spec comes from, as ``list`` shows it: ``built-in`` or the user's folder."""
        if not self.user:
            return BUILTIN
        label = specs.label_for(self.path)
        folder = label.rsplit("/", 1)[0] + "/" if "/" in label else "./"
        return folder + (" (overrides built-in)" if self.overrides else "")


class FolderError(ValueError):
    """The user's spec folder is missing or not a folder: one line, exit 2."""


def user_folder() -> Path | None:
    """The user's spec folder (``--specs``, ``$ARCHGEN_SPECS`` or ``./specs``); None when there is none or it is
    the built-in library itself (in a checkout)."""
    folder = specs.user_dir()
    if folder is None:
        return None
    if not folder.is_dir():
        raise FolderError(f"spec folder {folder.as_posix()} (--specs / $ARCHGEN_SPECS): not a folder")
    return None if folder.resolve() == specs.builtin_dir().resolve() else folder


def own() -> list[Entry]:
    """What ``build --all`` and ``check`` work on: the user's folder, else the built-in library."""
    folder = user_folder()
    if folder is None:
        return [Entry(p, False) for p in sorted(specs.builtin_dir().glob("*.yaml"))]
    builtin = {p.stem for p in specs.builtin_dir().glob("*.yaml")}
    return [Entry(p, True, p.stem in builtin) for p in sorted(folder.glob("*.yaml"))]


def everything() -> list[Entry]:
    """What ``list`` and ``plot`` show: the user's specs and every built-in one they do not override."""
    mine = own() if user_folder() is not None else []
    names = {e.name for e in mine}
    builtin = [Entry(p, False) for p in sorted(specs.builtin_dir().glob("*.yaml")) if p.stem not in names]
    return sorted([*mine, *builtin], key=lambda e: (e.name, e.user))


@dataclass
class Outcome(Generic[T]):
    done: list[tuple[Entry, T]]
    errors: list[str]  # one line per bad file: ``file:line:col: field: message``


def each(entries: list[Entry], work: Callable[[Path], T]) -> Outcome[T]:
    """``work`` on every spec; a bad spec's error is kept and the others go on."""
    out: Outcome[T] = Outcome([], [])
    for entry in entries:
        try:
            out.done.append((entry, work(entry.path)))
        except SpecError as exc:
            out.errors.append(str(exc))
        except OSError as exc:  # a file that cannot be read (a folder named x.yaml, no permission)
            out.errors.append(f"{specs.label_for(entry.path)}:1:1: cannot read: {exc.strerror or exc}")
    return out
