"""Free text from a spec (titles, sources, names, echoed values) made safe to show: on a terminal, in an SVG.

A spec's strings are the user's, or whoever wrote the file they downloaded: an escape sequence in a title can
retitle the terminal or clear the screen, and a control character makes an SVG invalid XML. Each such
character is shown as its Python escape (``\\x1b``), so the reader sees that it is there and what it is.
"""

from __future__ import annotations

import re
from html import escape

# C0 controls but tab and newline, DEL and C1 (0x9b is a one-byte CSI), lone surrogates (not encodable),
# the two non-characters XML forbids, line/paragraph separators and the bidirectional overrides/isolates
# (text that displays in another order than it reads).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every unsafe character replaced by its escape; tabs and newlines are kept."""
    return _UNSAFE.sub(_escaped, text)


def one_line(text: str) -> str:
    """``printable`` on one line: tabs and newlines shown as escapes too (a title, a label)."""
    return printable(text).replace("\t", "\\t").replace("\n", "\\n")


def xml_text(text: str) -> str:
    """Character data for an SVG ``<text>`` or ``<title>`` (one line): valid XML 1.0, markup escaped."""
    return escape(one_line(text), quote=True)
