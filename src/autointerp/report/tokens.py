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
