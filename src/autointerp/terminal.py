"""Text from models and datasets, made safe to print on a terminal.

A label is an LLM's answer and a token is dataset text: either may hold an ANSI
escape (clear the screen, retitle the window, a hyperlink), a carriage return
that overwrites what was printed before it, other C0/C1 control characters or
bidirectional overrides that reorder what the reader sees. `terminal_text` is
what the command line prints in their place: escape sequences removed (with the
text they carry), line breaks and tabs as spaces, every other control and
bidi-control character dropped, runs of spaces collapsed, and the result cut to
``max_chars``. Only the terminal gets this copy; files keep the text as it came.

>>> terminal_text("\\x1b[31mred\\x1b[0m\\rlabel\\u202e")
'red label'
"""

from __future__ import annotations

import re

#: CSI (ESC [ ... final, or the 8-bit CSI 0x9b), OSC (ESC ] ... BEL or ST), DCS/SOS/PM/APC strings, two-byte escapes
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: U+200E/F marks, U+202A-E embeddings and overrides, U+2066-9 isolates, U+061C the Arabic letter mark
BIDI_CONTROLS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
_BREAKS = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]+")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f" + BIDI_CONTROLS + "]")

#: a label or a token list longer than this on a terminal line is cut
DEFAULT_MAX_CHARS = 200


def terminal_text(text: object, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """``text`` as one line that prints as what it says (see the module docstring); at most ``max_chars``."""
    s = _ESCAPES.sub("", str(text))
    s = _BREAKS.sub(" ", s)
    s = _CONTROLS.sub("", s)
    s = re.sub(r" {2,}", " ", s).strip()
    if len(s) > max_chars:
        s = s[: max(0, max_chars - 1)].rstrip() + "…"
    return s
