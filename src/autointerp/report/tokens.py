"""Turn a tokenizer's token strings back into the text a person should see.

Byte-level tokenizers do not give one readable string per token:

* GPT-2 style vocabularies spell every byte as a printable character
  (``"Ġthe"`` is ``" the"``, ``"Ċ"`` is ``"\\n"``, ``"Ã©"`` is ``"é"``), and a
  multi-byte character may be split across tokens (``"âĢ"`` + ``"Ķ"`` is ``"—"``).
* SentencePiece vocabularies write a space as ``"▁"`` and fall back to byte
  tokens such as ``"<0xE2>"`` for characters outside the vocabulary.

`display_tokens` maps a window of such tokens to one string per token whose
concatenation is the window's correct UTF-8 text: a character split across
tokens is shown on the token that completes it (the tokens before it show an
empty string), and bytes that never form a character show ``"�"``.

>>> display_tokens(["Ġcaf", "Ã©", "Ġ", "âĢ", "Ķ"])
[' caf', 'é', ' ', '', '—']
>>> display_tokens(["▁caf", "<0xC3>", "<0xA9>"])
[' caf', '', 'é']
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Iterable
from functools import lru_cache

from autointerp.token_text import _gpt2_byte_decoder, token_texts

#: how token strings are spelled: "gpt2" (byte-to-unicode), "sentencepiece" ("▁", "<0x..>"), "plain" (text),
#: or a harvest's recorded tokenizer kind (`autointerp.token_text`), joined by that tokenizer's rules
TOKEN_STYLES = ("auto", "gpt2", "sentencepiece", "plain", "byte_level", "wordpiece", "metaspace")
_KINDS = ("byte_level", "wordpiece", "metaspace")


def style_for(token_style: str, tokenizer_kind: str | None) -> str:
    """The style a view uses: the harvest's recorded kind unless a style was chosen; "auto" otherwise."""
    return tokenizer_kind if token_style == "auto" and tokenizer_kind in _KINDS else token_style

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")

#: bidirectional controls: marks (U+200E/F), embeddings and overrides (U+202A-E), isolates (U+2066-9), U+061C
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def show_bidi(text: str) -> str:
    """``text`` with each bidirectional control as a visible escape, so that it cannot reorder what is shown.

    A token ``"report\u202efdp.exe"`` would read "reportexe.pdf"; the report
    (report.js does the same) shows ``"report⟨U+202E⟩fdp.exe"``.

    >>> show_bidi("a\u202eb")
    'a⟨U+202E⟩b'
    """
    return _BIDI.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def escape_html(text: str, quote: bool = True) -> str:
    """`html.escape` of run text for the notebook views, bidirectional controls shown (`show_bidi`)."""
    return html.escape(show_bidi(text), quote)


def detect_token_style(tokens: Iterable[str]) -> str:
    """Guess how a vocabulary spells tokens: ``"gpt2"``, ``"sentencepiece"`` or ``"plain"``.

    GPT-2 style is recognised by its space and newline characters ``"Ġ"`` / ``"Ċ"``;
    SentencePiece by ``"▁"``. A tokenizer whose ``decode`` already returns text
    is ``"plain"``. Pass ``token_style=`` explicitly where the guess is wrong.
    """
    sentencepiece = False
    for t in tokens:
        if not t:
            continue
        if "Ġ" in t or "Ċ" in t:
            return "gpt2"
        if "▁" in t:
            sentencepiece = True
    return "sentencepiece" if sentencepiece else "plain"


@lru_cache(maxsize=1 << 17)
def token_bytes(token: str, style: str) -> bytes:
    """The bytes one token stands for, under ``style``."""
    m = _BYTE_TOKEN.fullmatch(token)
    if m:
        return bytes([int(m.group(1), 16)])
    if style == "gpt2":
        dec = _gpt2_byte_decoder()
        try:
            return bytes(dec[ch] for ch in token)
        except KeyError:
            # a special or added token spelled in plain text
            return token.encode("utf-8")
    if style == "sentencepiece":
        return token.replace("▁", " ").encode("utf-8")
    return token.encode("utf-8")


def display_tokens(tokens: list[str], style: str = "auto") -> list[str]:
    """One display string per token; their concatenation is the window's UTF-8 text."""
    if style == "auto":
        style = detect_token_style(tokens)
    if style not in TOKEN_STYLES:
        raise ValueError(f"token_style must be one of {TOKEN_STYLES}, got {style!r}")
    if style in _KINDS:
        return token_texts(tokens, style)
    # a report shows millions of tokens from a vocabulary of thousands: one dict look-up each
    whole = _WHOLE.get(style)
    if whole is None or len(whole) > _WHOLE_MAX:
        whole = _WHOLE[style] = {}
    try:
        texts = [whole[t] for t in tokens]
    except KeyError:
        for t in tokens:
            if t not in whole:
                whole[t] = _whole_text(t, style)
        texts = [whole[t] for t in tokens]
    if None in texts:
        # Only runs of tokens that are not whole characters on their own need joining: a
        # token that is valid UTF-8 alone starts with a lead or ASCII byte, so it can
        # neither complete the run before it nor be continued by the run after it.
        i, n = 0, len(tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while i < n:
            if texts[i] is not None:
                i += 1
                continue
            j = i
            decoder.reset()
            while j < n and texts[j] is None:
                texts[j] = decoder.decode(token_bytes(tokens[j], style))
                j += 1
            texts[j - 1] += decoder.decode(b"", final=True)  # bytes left incomplete at the run's end
            i = j
    return texts  # type: ignore[return-value]


#: per style, token -> its whole text (None: not whole UTF-8 alone); emptied past _WHOLE_MAX tokens
_WHOLE: dict[str, dict[str, str | None]] = {}
_WHOLE_MAX = 1 << 18


@lru_cache(maxsize=1 << 17)
def _whole_text(token: str, style: str) -> str | None:
    """The token's text if its bytes are complete UTF-8 on their own, else None."""
    try:
        return token_bytes(token, style).decode("utf-8")
    except UnicodeDecodeError:
        return None


def single_token_text(token: str, style: str = "auto") -> str:
    """A token shown on its own (token tables): its text, or its bytes as ``<0x..>`` if not valid UTF-8."""
    if style == "auto":
        style = detect_token_style([token])
    if style in _KINDS:
        style = "plain"  # a recorded token of a known kind is already its own text (or <0x..> bytes)
    data = token_bytes(token, style)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in data)


# -- a window's text from a table of distinct tokens -----------------------------------


def needs_whole_window(token: str | None, style: str) -> bool:
    """True when ``token``'s text can depend on its neighbours, so a window holding it is rendered
    whole by `display_tokens`: a partial character (a byte token the characters around it may
    complete), or no string at all. Every other token reads the same wherever it stands, except
    that the first token of a window may differ (no separating space before it)."""
    if not isinstance(token, str):
        return True
    if style in _KINDS:
        # byte tokens are joined with their neighbours (WordPiece records none: its tokens are text)
        return style != "wordpiece" and token.startswith("<0x") and _BYTE_RUN.fullmatch(token) is not None
    return _whole_text(token, style) is None


_BYTE_RUN = re.compile(r"(?:<0x[0-9A-Fa-f]{2}>)+")


class TokenForms:
    """Each distinct token's forms under one style, computed once however often it occurs.

    ``forms(t)`` is ``(in_window, first, alone)``: its text inside a window (after another
    token), as a window's first token, and on its own in a token table (`single_token_text`).
    A token that `needs_whole_window` has instead its bytes (`run_bytes`): a run of such
    tokens reads as its bytes decoded as UTF-8 one token at a time (a character on the token
    that completes it, ``"�"`` for bytes that never form one, flushed at the run's end),
    and a ``"metaspace"`` window's first text drops its leading space
    (`drops_first_space`). Read that way, every window reads exactly as `display_tokens`
    renders it (checked by property tests), so the report's chunks hold raw tokens and a
    table of these forms, and no Python runs per occurrence of a token.

    >>> TokenForms("wordpiece").forms("the")
    (' the', 'the', 'the')
    >>> TokenForms("gpt2").run_bytes("âĢ")
    b'\\xe2\\x80'
    """

    def __init__(self, style: str):
        if style not in TOKEN_STYLES or style == "auto":
            raise ValueError(f"TokenForms needs a resolved token style (one of {TOKEN_STYLES[1:]}), got {style!r}")
        self.style = style
        self._forms: dict[str, tuple[str, str, str]] = {}
        #: tokens (and None) whose text depends on their neighbours
        self.whole: set[str | None] = {None}
        self._known: set[str | None] = {None}

    @property
    def drops_first_space(self) -> bool:
        """True when a window's first text loses its leading space (SentencePiece's decoder)."""
        return self.style == "metaspace"

    def learn(self, tokens: Iterable[str | None]) -> None:
        """Classify the tokens not seen before (a set difference: no Python for known tokens)."""
        for t in set(tokens) - self._known:
            self._known.add(t)
            if needs_whole_window(t, self.style):
                self.whole.add(t)
            else:
                assert t is not None
                self._forms[t] = (display_tokens(["a", t], self.style)[1], display_tokens([t], self.style)[0],
                                  single_token_text(t, self.style))

    def forms(self, token: str) -> tuple[str, str, str]:
        """``(in_window, first, alone)`` of a token that does not need its neighbours."""
        if token not in self._forms:
            self.learn([token])
        return self._forms[token]

    def alone(self, token: str) -> str:
        """The token on its own (`single_token_text`), whatever its kind."""
        if token in self._forms:
            return self._forms[token][2]
        return single_token_text(token, self.style)

    def run_bytes(self, token: str) -> bytes:
        """The bytes a token that needs its neighbours adds to its run."""
        if self.style in _KINDS:
            return bytes(int(h, 16) for h in _BYTE_HEX.findall(token))
        return token_bytes(token, self.style)


_BYTE_HEX = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def decode_runs(texts: list[str | None], run_bytes: list[bytes | None], drops_first_space: bool) -> list[str]:
    """A window's texts from per-token forms (``texts[i]``; None inside a run) and the run tokens'
    bytes (``run_bytes[i]``), as `TokenForms` describes; the viewer (report.js) does the same.

    >>> decode_runs([" caf", None, None, " ok"], [None, b"\\xc3", b"\\xa9", None], False)
    [' caf', '', 'é', ' ok']
    """
    out: list[str] = []
    decoder = None
    n = len(texts)
    for i, t in enumerate(texts):
        if t is not None:
            out.append(t)
            continue
        if decoder is None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out.append(decoder.decode(run_bytes[i] or b""))
        if i + 1 == n or texts[i + 1] is not None:
            out[-1] += decoder.decode(b"", final=True)
            decoder = None
    if drops_first_space and texts and texts[0] is None and out[0].startswith(" "):
        out[0] = out[0][1:]
    return out
