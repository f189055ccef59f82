"""Last line of defence: the generated source must parse and use only an allow-listed surface."""

from __future__ import annotations

import ast

ALLOWED_IMPORTS = frozenset(
    {
        "torch",
        "torch.nn",
        "torch.nn.functional",
        "torch.utils.checkpoint",
        "math",
        "contextlib",
        "pathlib",
        "typing",
    }
)
# The weights loader's imports, name by name: huggingface_hub can upload as well as download.
ALLOWED_FROM = {
    "huggingface_hub": frozenset({"hf_hub_download"}),
    "huggingface_hub.errors": frozenset({"EntryNotFoundError"}),
    "safetensors.torch": frozenset({"load_file"}),
}
FORBIDDEN_NAMES = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "__import__",
        "open",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "breakpoint",
        "input",
        "sys",
        "subprocess",
        "importlib",
        "builtins",
    }
)


class UnsafeOutput(Exception):
    pass


def check_source(text: str, filename: str) -> ast.Module:
    """Parse ``text`` and reject anything outside the allow-list; returns the tree."""
    try:
        tree = ast.parse(text, filename=filename)
    except SyntaxError as exc:
        raise UnsafeOutput(f"{filename}:{exc.lineno}: generated code does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name not in ALLOWED_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in ALLOWED_FROM:
            bad = [f"{node.module}.{a.name}" for a in node.names if a.name not in ALLOWED_FROM[node.module]]
        elif isinstance(node, ast.ImportFrom):
            bad = [] if node.level == 0 and node.module in ALLOWED_IMPORTS else [str(node.module)]
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            bad = [node.id]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr != "__init__":
            bad = [node.attr]
        else:
            continue
        if bad:
            raise UnsafeOutput(f"{filename}:{node.lineno}: generated code may not use {', '.join(bad)}")
    return tree
