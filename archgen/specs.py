"""Find spec files, merge ``extends:`` chains and validate the result against the schema."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archgen.errors import SpecError
from archgen.loader import Located, Path_, dotted, read_yaml
from archgen.schema import Spec

MAX_CHAIN = 16


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    source: str  # how the file is named in generated headers and errors (posix, relative)
    located: Located  # merged data with positions, for errors raised after validation

    def error(self, path: Path_, message: str, *, key: bool = False) -> SpecError:
        return SpecError(self.located.where(path, key=key), dotted(path), message)


def label_for(path: Path) -> str:
    """A stable, relative, posix name for ``path`` (no absolute paths in output)."""
    try:
        rel = Path(os.path.relpath(path.resolve(), Path.cwd()))
    except ValueError:
        rel = path
    text = rel.as_posix()
    return path.as_posix() if text.startswith("../") else text


def load(path: Path) -> LoadedSpec:
    label = label_for(path)
    located = _with_parents(path, label, [])
    try:
        spec = Spec.model_validate(located.data)
    except ValidationError as exc:
        raise _first_error(exc, located) from None
    if spec.name != path.stem:
        raise SpecError(located.where(("name",)), "name", f"'{spec.name}' must equal the file stem '{path.stem}'")
    return LoadedSpec(spec, label, located)


def _with_parents(path: Path, label: str, chain: list[str]) -> Located:
    chain = [*chain, path.stem]
    child = read_yaml(path, label)
    parent_name = child.data.pop("extends", None)
    if parent_name is None:
        return child
    where = child.where(("extends",))
    if not isinstance(parent_name, str) or not parent_name.isidentifier():
        raise SpecError(where, "extends", "must name another spec in the same folder")
    if parent_name in chain:
        raise SpecError(where, "extends", f"cycle: {' -> '.join([*chain, parent_name])}")
    if len(chain) > MAX_CHAIN:
        raise SpecError(where, "extends", f"chain longer than {MAX_CHAIN}: {' -> '.join(chain)}")
    parent_path = path.with_name(f"{parent_name}.yaml")
    if not parent_path.is_file():
        raise SpecError(where, "extends", f"parent '{parent_name}' not found (chain: {' -> '.join(chain)})")
    parent = _with_parents(parent_path, label_for(parent_path), chain)
    return _merge(parent, child, " -> ".join([*chain, parent_name]))


def _merge(parent: Located, child: Located, chain: str) -> Located:
    """Child values replace the parent's; mappings merge key by key, lists are replaced whole.

    A nested key the parent lacks is an error (a misspelt override would otherwise be silently
    added), unless the child changes the mapping's ``kind``, which replaces it whole.
    """
    out = Located(copy.deepcopy(parent.data), dict(parent.values), dict(parent.keys))

    def drop(path: Path_) -> None:
        for table in (out.values, out.keys):
            for p in [p for p in table if p[: len(path)] == path and len(p) > len(path)]:
                del table[p]

    def take(path: Path_) -> None:
        for table, src in ((out.values, child.values), (out.keys, child.keys)):
            table.update({p: v for p, v in src.items() if p[: len(path)] == path})

    def merge(target: dict[str, Any], source: dict[str, Any], path: Path_) -> None:
        for key, value in source.items():
            sub = (*path, key)
            old = target.get(key)
            if path and key not in target:
                raise SpecError(child.where(sub, key=True), dotted(sub), f"not in the parent spec (chain: {chain})")
            if (
                isinstance(value, dict)
                and isinstance(old, dict)
                and value.get("kind", old.get("kind")) == old.get("kind")
            ):
                out.keys[sub] = child.keys[sub]
                merge(old, value, sub)
            else:
                target[key] = copy.deepcopy(value)
                drop(sub)
                take(sub)

    merge(out.data, child.data, ())
    out.values[()] = child.values[()]
    return out


def _first_error(exc: ValidationError, located: Located) -> SpecError:
    """The first real error in file order; errors that only echo a deeper one (a tuple left empty
    because its item failed) are dropped."""
    errs = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errs]
    real = [e for e, loc in zip(errs, locs, strict=True) if not any(o[: len(loc)] == loc and o != loc for o in locs)]
    placed = []
    for err in real:
        path = _data_path(located.data, err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "kind")  # point at the discriminator, not the mapping
        extra = err["type"] == "extra_forbidden"
        pos = located.where(path, key=extra)
        placed.append(((pos.line, pos.col), path, extra, err))
    placed.sort(key=lambda item: item[0])
    _, path, extra, err = placed[0]
    message = "unknown field" if extra else _message(err)
    if len(placed) > 1:
        message += f" (and {len(placed) - 1} more)"
    return SpecError(located.where(path, key=extra), dotted(path), message)


def _data_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """Pydantic's location minus the union-tag steps it inserts (``stages.0.transformer.heads``)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        elif isinstance(node, dict) and node.get("kind") == part:
            continue  # the discriminator's own step
        elif isinstance(node, dict) and isinstance(part, str):
            return (*path, part)  # a missing field: name it; its position is its mapping's
        else:
            continue
        path.append(part)
    return tuple(path)


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def spec_dir() -> Path:
    """``$ARCHGEN_SPECS``, else ``./specs``, else the ``specs/`` beside an editable install."""
    env = os.environ.get("ARCHGEN_SPECS")
    if env:
        return Path(env)
    here = Path("specs")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "specs"


def find(name_or_path: str) -> Path:
    """A spec by file path or by name; a misspelt name gets a suggestion."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return Path(name_or_path)
    path = spec_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        import difflib

        names = all_names()
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SpecError(f"{label_for(path)}:1:1", "", f"no spec named '{name_or_path}'{hint}")
    return path


def all_paths() -> list[Path]:
    return sorted(spec_dir().glob("*.yaml"))


def all_names() -> list[str]:
    return [p.stem for p in all_paths()]
