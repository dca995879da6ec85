"""Tokens back into the text they came from, by the rules of the tokenizer that made them.

Every place a person or the LLM reads a window of tokens (prompts, report,
notebook views, export) goes through here, so that all of them agree with the
tokenizer's own ``decode``:

* ``"byte_level"`` (GPT-2 style BPE, ``ByteLevel`` pre-tokenizer/decoder): a
  token's text carries its own leading space (``" the"``); a token that holds
  part of a multi-byte character is recorded as its bytes (``"<0xE2><0x80>"``)
  and the character is shown on the token that completes it.
* ``"wordpiece"`` (BERT): ``"##ing"`` continues the word before it, every
  other token starts a new word after a space, and ``. , ? !`` attach to the
  word before (the WordPiece decoder's clean-up).
* ``"metaspace"`` (SentencePiece, ``▁`` marks a word start): recorded with the
  ``▁`` as a space (``" the"``), byte-fallback pieces (``"<0xE2>"``) joined into
  their character; the window's first leading space is dropped, as the decoder does.

A harvest records its kind in ``HarvestConfig.tokenizer_kind``; a harvest
without one (``None``, made before this module) keeps the old rendering, each
token's recorded string as it is.

`segments` is the one renderer: a list of ``(text, token_index)`` whose texts
joined are the window's text; ``token_index`` is None for a separator (the
space between two WordPiece words, which belongs to no token), so a prompt can
mark a firing token without swallowing the space and a report can shade each token.

>>> segments(["this", "li", "##cense", "."], "wordpiece")
[('this', 0), (' ', None), ('li', 1), ('cense', 2), ('.', 3)]
>>> "".join(t for t, _ in segments([" caf", "<0xC3>", "<0xA9>", " ok"], "byte_level"))
' café ok'
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

#: the tokenizer kinds rendered by their own rules (None: an old harvest, tokens shown as recorded)
TOKENIZER_KINDS = ("byte_level", "wordpiece", "metaspace")

_BYTES = re.compile(r"(?:<0x[0-9A-Fa-f]{2}>)+")
_ONE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
#: the WordPiece decoder's clean-up, applied to each token after its separating space
_WORDPIECE_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                      (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer_kind must be one of {TOKENIZER_KINDS} or None, got {kind!r}")
    return kind


# -- detection ------------------------------------------------------------------------


def _backend(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind ours, a HF fast tokenizer, or the tokenizer itself."""
    inner = getattr(tokenizer, "inner", tokenizer)  # autointerp.data.Tokenizer
    return getattr(inner, "backend_tokenizer", inner)


def _types(node: Any) -> list[str]:
    """Every component type named in a pre-tokenizer/decoder description (Sequence ones flattened)."""
    if not isinstance(node, dict):
        return []
    out = [str(node.get("type", ""))]
    for key in ("pretokenizers", "decoders"):
        for sub in node.get(key) or []:
            out += _types(sub)
    return out


def detect_tokenizer_kind(tokenizer: Any) -> str | None:
    """The kind of a `tokenizers.Tokenizer`, a HF tokenizer or our `Tokenizer` wrapper; None if unknown.

    Read from the tokenizer's own description: its decoder (``ByteLevel``,
    ``WordPiece``, ``Metaspace``, or the ``Replace ▁`` of Llama-style
    SentencePiece), then its pre-tokenizer and model type.
    """
    backend = _backend(tokenizer)
    if hasattr(backend, "to_str"):
        try:
            desc = json.loads(backend.to_str())
        except (ValueError, TypeError):
            desc = {}
        decoder = desc.get("decoder") or {}
        dec = _types(decoder)
        pre = _types(desc.get("pre_tokenizer") or {})
        model = str((desc.get("model") or {}).get("type", ""))
        if "ByteLevel" in dec or (not dec and "ByteLevel" in pre):
            return "byte_level"
        if "WordPiece" in dec or (not dec and model == "WordPiece"):
            return "wordpiece"
        if "Metaspace" in dec or "Metaspace" in pre or "▁" in json.dumps(decoder, ensure_ascii=False):
            return "metaspace"
        return None
    inner = getattr(tokenizer, "inner", tokenizer)
    names = " ".join(c.__name__ for c in type(inner).__mro__)
    if hasattr(inner, "sp_model") or "SentencePiece" in names:
        return "metaspace"
    if "Bert" in names or "WordPiece" in names:
        return "wordpiece"
    if hasattr(inner, "byte_decoder"):
        return "byte_level"
    return None


# -- what a harvest records per token ---------------------------------------------------


@lru_cache(maxsize=1)
def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's table of printable characters standing for bytes, inverted (char -> byte)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _piece(tokenizer: Any, token_id: int) -> str | None:
    inner = getattr(tokenizer, "inner", tokenizer)
    if hasattr(inner, "convert_ids_to_tokens"):
        return inner.convert_ids_to_tokens(int(token_id))
    return inner.id_to_token(int(token_id))


def _decode_one(tokenizer: Any, token_id: int) -> str:
    inner = getattr(tokenizer, "inner", tokenizer)
    try:
        # a special token is shown as itself: a firing on an invisible "" reads as nothing
        return inner.decode([int(token_id)], skip_special_tokens=False)
    except TypeError:
        return inner.decode([int(token_id)])


def token_string(tokenizer: Any, token_id: int, kind: str | None) -> str:
    """The string a harvest records for one token of a ``kind`` tokenizer (see the module doc)."""
    text = _decode_one(tokenizer, token_id)
    if kind == "byte_level" and "\ufffd" in text:
        piece = _piece(tokenizer, token_id)
        dec = _gpt2_byte_decoder()
        if piece and all(ch in dec for ch in piece):
            data = bytes(dec[ch] for ch in piece)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return "".join(f"<0x{b:02X}>" for b in data)
    if kind == "metaspace":
        piece = _piece(tokenizer, token_id)
        if piece is not None and (_BYTES.fullmatch(piece) or "▁" in piece):
            return piece.replace("▁", " ")
    return text


# -- rendering -------------------------------------------------------------------------


def _join_bytes(texts: list[str | None]) -> list[str]:
    """Runs of byte tokens (``"<0xE2><0x80>"``) decoded together; the character lands on the
    token that completes it, the ones before show ``""``, and stray bytes show ``"�"``."""
    texts = [t or "" for t in texts]
    if "<0x" not in "".join(texts):
        return texts  # no byte token (the usual window): nothing to join
    out: list[str] = []
    decoder = None
    for i, t in enumerate(texts):
        if t.startswith("<0x") and _BYTES.fullmatch(t):
            if decoder is None:
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            out.append(decoder.decode(bytes(int(h, 16) for h in _ONE_BYTE.findall(t))))
            nxt = texts[i + 1] if i + 1 < len(texts) else ""
            if not (nxt.startswith("<0x") and _BYTES.fullmatch(nxt)):
                out[-1] += decoder.decode(b"", final=True)
                decoder = None
        else:
            out.append(t)
    return out


def segments(tokens: Sequence[str | None], kind: str | None) -> list[tuple[str, int | None]]:
    """A window's tokens as ``(text, token_index)`` segments whose texts joined are its text.

    ``None`` tokens (no tokenizer) are left to the caller: they come back as ``""``.
    """
    check_kind(kind)
    if kind is None:
        return [(t or "", i) for i, t in enumerate(tokens)]
    if kind == "wordpiece":
        out: list[tuple[str, int | None]] = []
        for i, t in enumerate(tokens):
            t = t or ""
            if t.startswith("##"):
                out.append((t[2:], i))
                continue
            if i == 0:
                out.append((t, i))
                continue
            spaced = " " + t
            for dirty, clean in _WORDPIECE_CLEANUP:
                spaced = spaced.replace(dirty, clean)
            if spaced.startswith(" "):
                out.append((" ", None))
                spaced = spaced[1:]
            out.append((spaced, i))
        return out
    texts = _token_texts(tokens, kind)
    return list(zip(texts, range(len(texts))))


def _token_texts(tokens: Sequence[str | None], kind: str) -> list[str]:
    """The byte-level and metaspace texts: one per token, no separators."""
    texts = _join_bytes(list(tokens))
    if kind == "metaspace" and texts and texts[0].startswith(" "):
        texts[0] = texts[0][1:]
    return texts


def token_texts(tokens: Sequence[str | None], kind: str | None) -> list[str]:
    """One display string per token (a separator joins the token after it); joined, the window's text."""
    if kind in ("byte_level", "metaspace"):  # one segment per token, no separators
        return _token_texts(tokens, kind)
    out = ["" for _ in tokens]
    pending = ""
    for text, i in segments(tokens, kind):
        if i is None:
            pending += text
        else:
            out[i] += pending + text
            pending = ""
    if pending and out:
        out[-1] += pending
    return out


def window_text(tokens: Sequence[str | None], kind: str | None) -> str:
    return "".join(t for t, _ in segments(tokens, kind))


def token_alone(token: str | None, kind: str | None) -> str | None:
    """One token as it reads in running text after a word, for lists of tokens (labels, tables).

    WordPiece: ``"##g"`` continues a word, so it reads ``"g"``; any other token starts
    one, ``" sourc"`` (a punctuation mark the decoder attaches reads as itself), the
    same convention as byte-level and SentencePiece tokens, whose recorded text
    carries its leading space. A SentencePiece ``"▁"`` left in a token is that space.
    A partial character (``"<0xE2>"``) keeps its bytes; None and an old harvest
    (``kind`` None) are returned as they are.
    """
    if token is None or kind is None or _BYTES.fullmatch(token):
        return token
    if kind == "wordpiece":
        return "".join(text for text, _ in segments(["a", token], kind)[1:])
    if kind == "metaspace":
        return token.replace("▁", " ")
    return token


def vocab_token_text(token: str | None, kind: str | None) -> str:
    """One vocabulary token on its own (a list of promoted tokens) as the text it adds after a text.

    ``"wordpiece"``: ``"##ing"`` continues the word before it (``"ing"``), any other
    piece starts a new word after a space (``" the"``; ``.`` ``,`` ``?`` ``!`` attach
    with none, as the decoder's clean-up does). ``"byte_level"`` / ``"metaspace"``:
    the recorded string already is the token's text with its leading space; a byte
    token that is not a whole character stays ``<0x..>``. None: as recorded.

    >>> [vocab_token_text(t, "wordpiece") for t in ["the", "##ing", "."]]
    [' the', 'ing', '.']
    """
    check_kind(kind)
    token = token or ""
    if kind != "wordpiece":
        return token
    return "".join(t for t, i in segments(["", token], kind)[1:])


def vocab_token_texts(tokens: Sequence[str | None], kind: str | None) -> list[str]:
    """`vocab_token_text` of each token of a list (separate tokens, not a window of text)."""
    return [vocab_token_text(t, kind) for t in tokens]
