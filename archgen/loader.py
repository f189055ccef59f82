"""Read a spec file as plain data, remembering where every key and value stands.

Only YAML's safe core is accepted: mappings, sequences, strings, numbers, booleans and null.
Anchors, aliases, tags, duplicate keys, non-UTF-8 text, huge files and deep nesting are all errors
that name the file, line and column. ``extends:`` chains are merged here, so the schema sees one
mapping and every position still points into the file that wrote the value.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from archgen.errors import Pos, SpecError

MAX_BYTES = 1 << 20
MAX_DEPTH = 24
MAX_NODES = 50_000  # keys and values together (the largest library spec has 139): parsing stops here
MAX_DIGITS = 100  # Python refuses to read integers of more than 4300 digits; no spec needs 100

Path_ = tuple[str | int, ...]

_SAFE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases and limits nesting and size while composing."""

    # PyYAML shares resolver lists between loader classes; copy them before adding ours.
    yaml_implicit_resolvers: ClassVar[dict[str, list[Any]]] = {
        k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise SpecError(_pos(self.file, event.start_mark), "", "aliases (*name) are not allowed")
        if getattr(event, "anchor", None):
            raise SpecError(_pos(self.file, event.start_mark), "", "anchors (&name) are not allowed")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SpecError(_pos(self.file, event.start_mark), "", f"more than {MAX_NODES} values; a spec has hundreds")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise SpecError(_pos(self.file, event.start_mark), "", f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.1 reads 1e-6 as a string; spec authors mean a float.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that knows the loader's extra float form, so it quotes a string such as ``"0E0"``."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[Any]]] = {
        k: list(v) for k, v in yaml.SafeDumper.yaml_implicit_resolvers.items()
    }


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def dump_yaml(data: Any) -> str:
    """YAML text that :func:`read_yaml` reads back as ``data`` (``yaml.safe_dump`` writes the string
    ``"1e5"`` bare, which a spec reads as a number)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _pos(file: str, mark: Any) -> Pos:
    return Pos(file, mark.line + 1, mark.column + 1)


@dataclass
class Located:
    """Plain data plus the position of every key (``keys``) and value (``values``) by path."""

    data: dict[str, Any]
    values: dict[Path_, Pos] = field(default_factory=dict)
    keys: dict[Path_, Pos] = field(default_factory=dict)

    def drop(self, path: Path_) -> None:
        """Forget the positions of ``path`` and everything below it."""
        for table in (self.values, self.keys):
            for p in [p for p in table if p[: len(path)] == path]:
                del table[p]

    def where(self, path: Path_, *, key: bool = False) -> Pos:
        """The position of ``path`` or of its nearest ancestor that exists."""
        table = self.keys if key else self.values
        for cut in range(len(path), -1, -1):
            pos = table.get(path[:cut]) or self.values.get(path[:cut])
            if pos is not None:
                return pos
        return next(iter(self.values.values()))

    def first_written(self, prefixes: Sequence[Path_], file: str) -> tuple[Path_, Pos] | None:
        """The first value, in file order, that ``file`` wrote under the first of ``prefixes`` under which it
        wrote anything (one pass over the positions)."""
        rank: dict[Path_, int] = {}
        for i, prefix in enumerate(prefixes):
            rank.setdefault(prefix, i)
        best: dict[int, tuple[Path_, Pos]] = {}
        for path, pos in self.values.items():
            if pos.file != file or not path:
                continue
            i = min((rank[path[:cut]] for cut in range(1, len(path) + 1) if path[:cut] in rank), default=None)
            if i is not None and (i not in best or (pos.line, pos.col) < (best[i][1].line, best[i][1].col)):
                best[i] = (path, pos)
        return best[min(best)] if best else None


def read_yaml(path: Path, label: str) -> Located:
    """Parse one file (no ``extends`` handling). ``label`` is how errors name the file."""
    raw = _read_bounded(path, label)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{label}:{line}:1", "", "not valid UTF-8") from None
    bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        col = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise SpecError(f"{label}:{line}:{col}", "", f"control character U+{ord(bad.group()):04X} is not allowed")
    loader = _Loader(text, label)
    try:
        node = loader.get_single_node()
    except SpecError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _pos(label, mark) if mark else f"{label}:1:1"
        raise SpecError(where, "", f"YAML syntax: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{label}:1:1", "", f"YAML: {exc}") from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecError(f"{label}:1:1", "", "empty file; a spec is a mapping")
    if node.tag != _MAP_TAG or not isinstance(node, yaml.MappingNode):
        raise SpecError(_pos(label, node.start_mark), "", "a spec must be a mapping at the top level")
    located = Located({})
    located.data = _build(loader, node, (), located, label)
    return located


def _read_bounded(path: Path, label: str) -> bytes:
    """The file's bytes, never more than ``MAX_BYTES`` read: only a regular file is opened for reading (a FIFO
    would block, a device never end), its size is checked before reading, and at most one byte past the
    limit is read in case it grew meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SpecError(f"{label}:1:1", "", "no such spec file") from None
    except OSError as exc:
        raise SpecError(f"{label}:1:1", "", f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(f"{label}:1:1", "", "not a regular file")
        if info.st_size > MAX_BYTES:
            raise SpecError(f"{label}:1:1", "", f"file is {info.st_size} bytes; specs are limited to {MAX_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{label}:1:1", "", f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise SpecError(f"{label}:1:1", "", f"file is over {MAX_BYTES} bytes; specs are limited to {MAX_BYTES}")
    return raw


def _build(loader: _Loader, node: Any, path: Path_, out: Located, label: str) -> Any:
    out.values[path] = _pos(label, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            raise SpecError(out.values[path], dotted(path), f"tag {node.tag} is not allowed")
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_pos = _pos(label, key_node.start_mark)
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<":
                raise SpecError(key_pos, dotted(path), "merge keys (<<) are not allowed")
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise SpecError(key_pos, dotted(path), "keys must be plain strings")
            key = key_node.value
            if key in result:
                raise SpecError(key_pos, dotted((*path, key)), "duplicate key")
            out.keys[(*path, key)] = key_pos
            result[key] = _build(loader, value_node, (*path, key), out, label)
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise SpecError(out.values[path], dotted(path), f"tag {node.tag} is not allowed")
        return [_build(loader, item, (*path, i), out, label) for i, item in enumerate(node.value)]
    if node.tag not in _SAFE_TAGS:
        raise SpecError(out.values[path], dotted(path), f"tag {node.tag} is not allowed")
    if node.tag in _NUMBER_TAGS and len(node.value) > MAX_DIGITS:
        raise SpecError(out.values[path], dotted(path), f"number longer than {MAX_DIGITS} characters")
    return loader.construct_object(node, deep=True)


def dotted(path: Path_) -> str:
    """``stages[0].block[1].op`` (a key longer than any field name is shortened: it is echoed in errors)."""
    text = ""
    for part in path:
        name = part if isinstance(part, int) or len(part) <= 60 else part[:57] + "..."
        text += f"[{name}]" if isinstance(name, int) else (f".{name}" if text else str(name))
    return text
