"""Find spec files, merge ``extends:`` chains and validate the result against the schema."""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from archgen.catalogue import DEFAULT_KIND, INTERNAL, KINDS
from archgen.errors import Pos, SpecError, unknown
from archgen.loader import Located, Path_, dotted, read_yaml
from archgen.norms import Act
from archgen.schema import Spec

MAX_CHAIN = 16
TAGS = frozenset(k.tag() for k in (*KINDS, *INTERNAL))
# Fields that belong to the variant they were measured on: a child never inherits them.
NOT_INHERITED = ("published", "reference")
# Nor its name, which is its own file's stem.
OWN = ("name", *NOT_INHERITED)
# What a spec name looks like (schema.Spec.name): checked before a name reaches the file system.
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,59}$")


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    source: str  # how the file is named in generated headers and errors (posix, relative)
    located: Located  # merged data with positions, for errors raised after validation

    def error(
        self, path: Path_, message: str, *, key: bool = False, inputs: Sequence[Path_] | None = None
    ) -> SpecError:
        return _error(self.located, self.source, path, message, key=key, inputs=inputs)


def _error(
    located: Located,
    source: str,
    path: Path_,
    message: str,
    *,
    key: bool = False,
    inputs: Sequence[Path_] | None = None,
) -> SpecError:
    """An error at ``path``, reported where its value was written. A value inherited from a parent file that
    fails only with what the user's file changed is the user's error: it is reported at the first value the
    user wrote under ``inputs`` (what the failing check read, nearest first; by default the mappings
    around ``path``), naming the inherited value and where it stands."""
    pos = located.where(path, key=key)
    if pos.file != source:
        around = [path[:cut] for cut in range(len(path) - 1, 0, -1)]
        mine = located.first_written(around if inputs is None else inputs, source)
        if mine is not None:
            where, written = mine
            return SpecError(written, dotted(where), f"{dotted(path)}: {message} (inherited from {pos})")
    return SpecError(pos, dotted(path), message)


def label_for(path: Path) -> str:
    """A stable, relative, posix name for ``path`` (no absolute paths in output): ``specs/<name>.yaml`` for the
    built-in library wherever it is installed, else relative to the working folder where possible."""
    if path.resolve().parent == builtin_dir().resolve():
        return f"specs/{path.name}"
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
        raise first_error(exc, located, label) from None
    if spec.name != path.stem:
        raise SpecError(located.where(("name",)), "name", f"'{spec.name}' must equal the file stem '{path.stem}'")
    return LoadedSpec(spec, label, located)


def _with_parents(path: Path, label: str, chain: list[str]) -> Located:
    chain = [*chain, path.stem]
    child = read_yaml(path, label)
    if "extends" not in child.data:
        return child
    parent_name = child.data.pop("extends")
    where = child.where(("extends",))
    if not isinstance(parent_name, str) or not NAME.match(parent_name):
        raise SpecError(where, "extends", "must name another spec by its name (lowercase letters, digits, _)")
    if parent_name in chain:
        raise SpecError(where, "extends", f"cycle: {' -> '.join([*chain, parent_name])}")
    if len(chain) > MAX_CHAIN:
        raise SpecError(where, "extends", f"chain longer than {MAX_CHAIN}: {' -> '.join(chain)}")
    # the spec's own folder first, then the user's spec folder, then the built-in library
    folders = [path.parent, *(d for d in search_dirs() if d.resolve() != path.parent.resolve())]
    parent_path = next((d / f"{parent_name}.yaml" for d in folders if (d / f"{parent_name}.yaml").is_file()), None)
    if parent_path is None:
        hint = did_you_mean(parent_name, folders)
        raise SpecError(where, "extends", f"parent '{parent_name}' not found{hint} (chain: {' -> '.join(chain)})")
    parent = _with_parents(parent_path, label_for(parent_path), chain)
    for name in OWN:
        parent.data.pop(name, None)
        parent.drop((name,))
    return _merge(parent, child)


def _merge(parent: Located, child: Located) -> Located:
    """Child values replace the parent's; mappings merge key by key (a mapping whose ``kind`` changes is
    replaced whole), lists are replaced whole, and a mapping given for the parent's ``stages`` list merges
    into the stage with that ``key``. Misspelt keys are caught by the schema afterwards.

    Positions follow the values: a subtree the child replaces takes the child's positions. They are
    gathered in one pass at the end, so merging costs time linear in the size of both files."""
    data = copy.deepcopy(parent.data)
    taken: dict[Path_, Path_] = {}  # the child's subtree at src replaces the merged one at dst
    merged_keys: dict[Path_, Pos] = {}  # mappings both files give: the child's key position

    def merge(target: dict[str, Any], source: dict[str, Any], src: Path_, dst: Path_) -> None:
        for key, value in source.items():
            old = target.get(key)
            s, d = (*src, key), (*dst, key)
            if dst == () and key == "stages" and isinstance(value, dict) and isinstance(old, list):
                merged_keys[d] = child.keys[s]
                _merge_stages(old, value, s, d)
            elif (
                isinstance(value, dict)
                and isinstance(old, dict)
                and value.get("kind", old.get("kind")) == old.get("kind")
            ):
                merged_keys[d] = child.keys[s]
                merge(old, value, s, d)
            else:
                target[key] = copy.deepcopy(value)
                taken[s] = d

    def _merge_stages(stages: list[Any], changes: dict[str, Any], src: Path_, dst: Path_) -> None:
        # a parent's stage without a string key cannot be addressed; the schema reports it afterwards
        keys = [st.get("key") if isinstance(st, dict) and isinstance(st.get("key"), str) else None for st in stages]
        named = [k for k in keys if k is not None]
        for key, value in changes.items():
            if key not in keys:
                close = difflib.get_close_matches(key, named, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (stages: {', '.join(named) or 'none named'})"
                raise SpecError(
                    child.where((*src, key), key=True), dotted((*dst, key)), f"no stage with this key{hint}"
                )
            i = keys.index(key)
            if not isinstance(value, dict):
                raise SpecError(
                    child.where((*src, key)), dotted((*dst, i)), "give the stage's changed fields as a mapping"
                )
            merged_keys[(*dst, i)] = child.keys[(*src, key)]
            merge(stages[i], value, (*src, key), (*dst, i))

    merge(data, child.data, (), ())
    replaced = set(taken.values())
    out = Located(data)
    for table, own, mine in ((out.values, parent.values, child.values), (out.keys, parent.keys, child.keys)):
        table.update({p: v for p, v in own.items() if not any(p[:cut] in replaced for cut in range(1, len(p) + 1))})
        for p, v in mine.items():
            cut = next((cut for cut in range(1, len(p) + 1) if p[:cut] in taken), None)
            if cut is not None:
                table[(*taken[p[:cut]], *p[cut:])] = v
    out.keys.update(merged_keys)
    out.values[()] = child.values[()]
    return out


# "did you mean …?" is worked out for this many unknown fields at most (the first in file order): a file of
# ten thousand unknown keys is reported at once, not after ten thousand fuzzy matches.
MAX_SUGGESTED = 50


def first_error(exc: ValidationError, located: Located, source: str) -> SpecError:
    """The most useful error: a misspelt key with a close match first, then the first in file order.
    Errors that only echo a deeper one (a tuple left empty because its item failed) are dropped.
    Time is linear in the number of errors."""
    errs = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errs]
    echoed = {loc[:cut] for loc in locs for cut in range(len(loc))}  # proper prefixes of some error's place
    placed = []
    for err, loc in zip(errs, locs, strict=True):
        if loc in echoed:
            continue
        path = _data_path(located.data, err["loc"])
        extra = err["type"] == "extra_forbidden"
        kinds = []
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            kinds = kinds_at(located.data, path)
            path = (*path, "kind")  # point at the discriminator, not the mapping
        pos = located.where(path, key=extra)
        what = _catalogue_name(located.data, path) if err["type"] == "literal_error" else None
        placed.append(((pos.line, pos.col), path, extra, _message(err, kinds, what)))
    placed.sort(key=lambda item: item[0])
    messages, meant = [], []  # meant: the field a misspelt one stands for
    unknown = 0
    for _, path, extra, message in placed:
        close: list[str] = []
        if extra:
            unknown += 1
            valid = fields_at(located.data, path[:-1]) if unknown <= MAX_SUGGESTED else []
            close = difflib.get_close_matches(str(path[-1])[:100], valid, n=1)
            message = f"unknown field; did you mean '{close[0]}'?" if close else "unknown field"
            message += f" (valid here: {', '.join(valid)})" if valid and not close else ""
        messages.append(message)
        meant.append((*path[:-1], close[0]) if close else None)
    # a misspelt field first (the field it meant is reported missing too: one problem, not two)
    first = next((i for i, m in enumerate(meant) if m is not None), 0)
    _, path, extra, _ = placed[first]
    message = messages[first]
    missing = [p for (_, p, _, _), m in zip(placed, messages, strict=True) if m == "required field is missing"]
    rest = len(placed) - 1 - (missing.count(meant[first]) if meant[first] else 0)
    if rest:
        message += f" (and {rest} more)"
    return _error(located, source, path, message, key=extra)


def _data_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """Pydantic's location minus the union-tag steps it inserts (``stages.0.blocks.heads``)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        elif isinstance(node, dict) and part in TAGS and node.get("kind", part) == part:
            continue  # the discriminator's own step (a stage without `kind:` is `blocks`)
        elif isinstance(node, dict) and isinstance(part, str):
            return (*path, part)  # a missing field: name it; its position is its mapping's
        else:
            continue
        path.append(part)
    return tuple(path)


def fields_at(data: Any, path: Path_) -> list[str]:
    """The field names the schema allows in the mapping at ``path`` (for "did you mean …?")."""
    tp, node = _type_at(data, path)
    model = _model_of(tp, node)
    return list(model.model_fields) if model is not None else []


def kinds_at(data: Any, path: Path_) -> list[str]:
    """The ``kind:`` names the schema allows for the part at ``path``."""
    tp, _ = _type_at(data, path)
    while True:  # through Annotated and Optional to the union of parts
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        else:
            break
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    found = [_model_of(m, None) for m in members]
    return [m.tag() for m in found if m is not None and "kind" in m.model_fields]


def _type_at(data: Any, path: Path_) -> tuple[Any, Any]:
    """The schema's type at ``path`` and the data there (None where the path leaves the schema)."""
    tp: Any = Spec
    node = data
    for part in path:
        model = _model_of(tp, node)
        if isinstance(part, int):
            tp = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        elif model is not None and part in model.model_fields:
            tp = model.model_fields[part].annotation
        else:
            return None, None
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return tp, node


def _has(node: dict[str, Any] | list[Any], part: str | int) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and part < len(node)


def _model_of(tp: Any, node: Any) -> type[BaseModel] | None:
    """The pydantic model that validates ``node`` as type ``tp`` (a union member picked by ``kind``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _model_of(args[0], node)
    if origin in (typing.Union, types.UnionType):
        models = [m for a in args if (m := _model_of(a, node)) is not None]
        if len(models) == 1:
            return models[0]
        kind = node.get("kind") if isinstance(node, dict) else None
        if kind is None:
            kind = next((DEFAULT_KIND[m.slot] for m in models if getattr(m, "slot", None) in DEFAULT_KIND), None)
        return next((m for m in models if hasattr(m, "tag") and m.tag() == kind), None)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _catalogue_name(data: Any, path: Path_) -> str | None:
    """What the values of the Literal at ``path`` are, where they name a catalogue: a part's or a norm's
    ``kind``, an activation."""
    tp, _ = _type_at(data, path)
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if tp == Act:
        return "activation"
    return "kind" if path and path[-1] == "kind" else None


def _message(err: dict[str, Any], kinds: list[str], what: str | None = None) -> str:
    """Pydantic's message in the spec's words; ``kinds``: the kinds allowed where a union's tag failed;
    ``what``: the name of the catalogue a Literal's values are (``kind``, ``activation``)."""
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        valid = ", ".join(kinds)
        tag = "" if ctx.get("tag") is None else str(ctx["tag"])[:60]
        if not tag:
            return f"`kind:` is missing; valid here: {valid}"
        return unknown("kind", tag, kinds)
    if kind == "literal_error" and what:
        return unknown(what, err["input"], re.findall(r"'([^']*)'", err["ctx"]["expected"]))
    return str(err["msg"]).removeprefix("Value error, ")


def builtin_dir() -> Path:
    """The spec library that ships with archgen: ``archgen/library`` when installed, ``specs/`` in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "library"
    return installed if installed.is_dir() else here.parent / "specs"


def user_dir() -> Path | None:
    """The user's spec folder: ``--specs DIR`` / ``$ARCHGEN_SPECS``, else ``./specs`` if there is one."""
    env = os.environ.get("ARCHGEN_SPECS")
    if env:
        return Path(env)
    here = Path("specs")
    return here if here.is_dir() and here.resolve() != builtin_dir().resolve() else None


def search_dirs() -> list[Path]:
    """Where a spec named without a path is looked for: the user's folder, then the built-in library."""
    user = user_dir()
    return [user, builtin_dir()] if user is not None else [builtin_dir()]


def spec_dir() -> Path:
    """The folder ``build --all``, ``check``, ``list`` and ``plot`` work on."""
    return search_dirs()[0]


def find(name_or_path: str) -> Path:
    """A spec by file path or by name; a misspelt name gets a suggestion."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return Path(name_or_path)
    folders = search_dirs()
    if NAME.match(name_or_path):  # anything else names no spec: it never reaches the file system
        for folder in folders:
            if (folder / f"{name_or_path}.yaml").is_file():
                return folder / f"{name_or_path}.yaml"
    hint = did_you_mean(name_or_path, folders)
    where = f"{label_for(folders[0] / '_.yaml').removesuffix('_.yaml')}{name_or_path}.yaml:1:1"
    raise SpecError(where, "", f"no spec named '{name_or_path}'{hint}")


def did_you_mean(name: str, folders: list[Path]) -> str:
    """``; did you mean 'deit_s'?`` when a spec in ``folders`` has a name close to ``name``."""
    names = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})
    close = difflib.get_close_matches(name[:100], names, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def all_paths() -> list[Path]:
    return sorted(spec_dir().glob("*.yaml"))


def all_names() -> list[str]:
    return [p.stem for p in all_paths()]
