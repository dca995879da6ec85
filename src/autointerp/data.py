"""Token data for a harvest: batches of ``[B, S]`` token ids, each row with its global sequence id.

Sources:

* `ArrayTokenSource`: pre-tokenized arrays read by memory map, ``.npy`` (1-D token
  stream or 2-D ``[rows, length]``) or raw ``.bin`` token files (nanoGPT style,
  ``--token_dtype uint16`` by default); also built in memory from text files.
* `TextFileSource`: plain text files tokenized with a tokenizer, packed into
  ``context_length`` sequences (an array source once tokenized).
* `HFStreamSource`: a Hugging Face ``datasets`` dataset, streamed, tokenized and
  packed (documents joined with the tokenizer's end-of-text token), or read as is
  from an ``input_ids`` column when the dataset is pre-tokenized.

Every sequence has a **sequence id**: its row index in the dataset's canonical
order (the n-th packed window). `token_batches` fixes the batch order from the
seed and numbers batches globally; ``rank``/``world_size`` take every
``world_size``-th batch and ``skip`` drops a worker's first batches without
running any model (an array source jumps straight there; a stream re-reads and
re-tokenizes the skipped prefix, which costs no model forward). Because the
harvest's sampling keys hash the sequence id, a resumed or split run keeps
exactly the samples of one uninterrupted pass.

>>> src = ArrayTokenSource.from_file("tokens.bin", context_length=128)
>>> for tb in token_batches(src, batch_size=32, n_batches=10, seed=0):
...     tb.tokens.shape, tb.sequence_ids      # [32, 128], [32]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attrs import define
from torch import Tensor

from autointerp.demo_model import demo_dir


@define(eq=False)
class TokenBatch:
    """One batch of token ids. ``mask`` is None when every position is real data."""

    tokens: Tensor  # [B, S] int64
    sequence_ids: Tensor  # [B] int64
    mask: Tensor | None  # [B, S] bool
    index: int  # global batch index (before rank striding)


class Tokenizer:
    """A tokenizer reduced to what a harvest needs; wraps `tokenizers.Tokenizer` or a HF tokenizer.

    ``decode(id)`` is one token's text. Byte-level BPE tokens that hold part of a
    multi-byte UTF-8 character decode to U+FFFD on their own; decode a whole
    window's ``token_ids`` together to get the exact text back.
    """

    def __init__(self, inner: Any, name: str = ""):
        self.inner = inner
        self.name = name or type(inner).__name__
        self._cache: dict[int, str] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as TkTokenizer

        return cls(TkTokenizer.from_file(str(path)), name=str(path))

    @classmethod
    def from_pretrained(cls, name: str) -> Tokenizer:
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError("loading a Hugging Face tokenizer needs transformers: pip install 'autointerp[hf]'") from e
        return cls(AutoTokenizer.from_pretrained(name), name=name)

    @property
    def is_hf(self) -> bool:
        return hasattr(self.inner, "convert_ids_to_tokens")

    @property
    def vocab_size(self) -> int:
        if self.is_hf:
            return len(self.inner)
        return int(self.inner.get_vocab_size())

    @property
    def eos_id(self) -> int | None:
        if self.is_hf:
            return self.inner.eos_token_id
        for t in ("<|endoftext|>", "</s>", "<eos>"):
            i = self.inner.token_to_id(t)
            if i is not None:
                return int(i)
        return None

    def encode(self, text: str) -> list[int]:
        if self.is_hf:
            return list(self.inner(text, add_special_tokens=False)["input_ids"])
        return list(self.inner.encode(text).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.is_hf:
            return [list(x) for x in self.inner(list(texts), add_special_tokens=False)["input_ids"]]
        return [list(e.ids) for e in self.inner.encode_batch(list(texts))]

    @property
    def kind(self) -> str | None:
        """How its tokens join into text (`autointerp.token_text`): "byte_level", "wordpiece", "metaspace" or None."""
        if not hasattr(self, "_kind"):
            from autointerp.token_text import detect_tokenizer_kind

            self._kind = detect_tokenizer_kind(self.inner)
        return self._kind

    def decode(self, token_id: int) -> str:
        t = int(token_id)
        s = self._cache.get(t)
        if s is None:
            from autointerp.token_text import token_string

            # recorded so that token_text can join a window back into its text by this tokenizer's rules
            s = token_string(self.inner, t, self.kind)
            self._cache[t] = s
        return s


class TokenSource:
    """Base: a dataset of token sequences of (at most) ``context_length`` tokens, in a canonical order."""

    context_length: int
    name: str = ""
    description: str = ""
    tokenizer: Tokenizer | None = None
    #: True if `sequences(ids)` gives random access; otherwise `stream()` is used
    random_access: bool = False

    @property
    def vocab_size(self) -> int | None:
        return self.tokenizer.vocab_size if self.tokenizer is not None else None

    @property
    def decode(self) -> Callable[[int], str] | None:
        return self.tokenizer.decode if self.tokenizer is not None else None

    def n_sequences(self) -> int | None:
        return None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "context_length": self.context_length}

    def sequences(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Random access: tokens ``[len(ids), S]`` int64 and lengths ``[len(ids)]``."""
        raise NotImplementedError

    def stream(self, seed: int) -> Iterator[np.ndarray]:
        """Sequences in order (each at most S tokens); the n-th has sequence id n."""
        raise NotImplementedError


class ArrayTokenSource(TokenSource):
    """Token ids in an array (a memory map for files): a 1-D stream cut into windows, or 2-D rows.

    A 1-D stream of T tokens gives ``ceil(T / S)`` sequences; the last one is
    shorter and its padding is masked out.
    """

    random_access = True

    def __init__(self, array: np.ndarray, context_length: int, *, name: str = "", description: str = "",
                 tokenizer: Tokenizer | None = None):
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, got {context_length}")
        if array.ndim not in (1, 2):
            raise ValueError(f"token arrays must be 1-D (a token stream) or 2-D [rows, length], got shape {array.shape}")
        if array.ndim == 2 and array.shape[1] < context_length:
            raise ValueError(
                f"{name or 'the token array'} has rows of {array.shape[1]} tokens, shorter than context_length "
                f"{context_length}; pass --context_length {array.shape[1]} or less"
            )
        self.array = array
        self.context_length = context_length
        self.name = name
        self.description = description or f"pre-tokenized token ids ({name})"
        self.tokenizer = tokenizer
        if self.n_sequences() == 0:
            raise ValueError(f"the dataset {name or '(array)'} is empty: it has no tokens")

    @classmethod
    def from_file(cls, path: str | Path, context_length: int, *, token_dtype: str = "uint16",
                  tokenizer: Tokenizer | None = None, description: str = "") -> ArrayTokenSource:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"token file {path} does not exist")
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
        elif path.suffix == ".bin":
            size = path.stat().st_size
            itemsize = np.dtype(token_dtype).itemsize
            if size % itemsize:
                raise ValueError(f"{path} has {size} bytes, not a multiple of {itemsize} ({token_dtype}); is --token_dtype right?")
            if size == 0:
                raise ValueError(f"the dataset {path} is empty: it has no tokens")
            arr = np.memmap(path, dtype=token_dtype, mode="r")
        else:
            raise ValueError(f"unknown token file type {path.suffix!r} for {path}: expected .npy or .bin")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{path} holds {arr.dtype} values, expected integer token ids")
        _refuse_negative_ids(arr, path)
        return cls(arr, context_length, name=path.name, description=description, tokenizer=tokenizer)

    def n_sequences(self) -> int:
        if self.array.ndim == 2:
            return int(self.array.shape[0])
        return math.ceil(int(self.array.shape[0]) / self.context_length)

    def sequences(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        S = self.context_length
        out = np.zeros((len(ids), S), dtype=np.int64)
        lengths = np.full(len(ids), S, dtype=np.int64)
        if self.array.ndim == 2:
            order = np.argsort(ids)  # sorted reads are kinder to a memory map
            out[order] = self.array[np.asarray(ids)[order], :S]
            return out, lengths
        T = self.array.shape[0]
        for j, i in enumerate(ids):
            chunk = self.array[int(i) * S : min(int(i) * S + S, T)]
            out[j, : len(chunk)] = chunk
            lengths[j] = len(chunk)
        return out, lengths


#: elements scanned at once when checking a token file (bounded memory on a memory map)
_SCAN_CHUNK = 1 << 24


def _refuse_negative_ids(arr: np.ndarray, path: Path) -> None:
    """A signed token file with a negative id is refused when it is opened, before any model runs."""
    if not np.issubdtype(arr.dtype, np.signedinteger):
        return
    flat = arr.reshape(-1)
    for lo in range(0, flat.shape[0], _SCAN_CHUNK):
        chunk = np.asarray(flat[lo : lo + _SCAN_CHUNK])
        if chunk.size and chunk.min() < 0:
            at = lo + int(np.argmax(chunk < 0))
            raise ValueError(f"{path} holds the negative token id {int(flat[at])} at position {at:,}; "
                             "expected ids >= 0 (was the file written with the right dtype?)")


class TextFileSource(ArrayTokenSource):
    """Plain text files, tokenized in memory and packed (documents joined by end-of-text).

    Each file is one document. For corpora larger than memory, pre-tokenize to a
    ``.bin`` file and use `ArrayTokenSource`.
    """

    def __init__(self, paths: Sequence[str | Path] | str | Path, tokenizer: Tokenizer, context_length: int, *,
                 name: str = "", description: str = "", texts: Sequence[str] | None = None):
        if texts is None:
            files = _expand_paths(paths)
            texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
            name = name or ",".join(p.name for p in files[:3]) + (" ..." if len(files) > 3 else "")
        eos = tokenizer.eos_id
        ids: list[int] = []
        for doc in tokenizer.encode_batch([t for t in texts if t]):
            if ids and eos is not None:
                ids.append(eos)
            ids.extend(doc)
        if not ids:
            raise ValueError(f"the dataset {name or '(text)'} is empty: its text has no tokens")
        super().__init__(np.asarray(ids, dtype=np.int64), context_length, name=name,
                         description=description or f"plain text ({name})", tokenizer=tokenizer)


def _expand_paths(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*.txt") if q.is_file()))
        elif any(ch in str(p) for ch in "*?["):
            files.extend(sorted(Path().glob(str(p))))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"text file {p} does not exist")
    if not files:
        raise ValueError(f"no text files found in {[str(p) for p in paths]}")
    return files


class HFStreamSource(TokenSource):
    """A Hugging Face dataset, streamed and tokenized on the fly, packed into ``context_length`` windows.

    ``shuffle_buffer > 0`` shuffles documents with ``IterableDataset.shuffle(seed, buffer_size)``
    (deterministic for a seed). A dataset with an ``input_ids`` column is used as is
    (each row cut into windows) and needs no tokenizer.
    """

    def __init__(self, path: str, tokenizer: Tokenizer | None, context_length: int, *, config: str | None = None,
                 split: str = "train", text_column: str | None = None, shuffle_buffer: int = 0,
                 streaming: bool = True, description: str = "", data_files: Any = None):
        try:
            import datasets  # noqa: F401
        except ImportError as e:
            raise ImportError("Hugging Face datasets need the datasets package: pip install 'autointerp[hf]'") from e
        self.path, self.config, self.split = path, config, split
        self.text_column = text_column
        self.shuffle_buffer = shuffle_buffer
        self.streaming = streaming
        self.data_files = data_files
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.name = path + (f":{config}" if config else "")
        self.description = description or f"the Hugging Face dataset {self.name} (split {split})"
        self._description_given = bool(description)

    def _dataset(self, seed: int):
        from datasets import load_dataset

        ds = load_dataset(self.path, self.config, split=self.split, streaming=self.streaming, data_files=self.data_files)
        if self.shuffle_buffer:
            ds = ds.shuffle(seed=seed, buffer_size=self.shuffle_buffer) if self.streaming else ds.shuffle(seed=seed)
        info = (getattr(getattr(ds, "info", None), "description", "") or "").strip()
        if info and not self._description_given:  # the dataset card's words are better than ours
            self.description = f"{info[:500]} (the Hugging Face dataset {self.name}, split {self.split})"
        return ds

    def info(self) -> dict[str, Any]:
        return {**super().info(), "split": self.split, "text_column": self.text_column, "shuffle_buffer": self.shuffle_buffer}

    def stream(self, seed: int) -> Iterator[np.ndarray]:
        S = self.context_length
        ds = self._dataset(seed)
        column = self.text_column
        buf: list[int] = []
        eos = self.tokenizer.eos_id if self.tokenizer is not None else None
        docs: list[str] = []
        n_docs = [0]

        def flush(texts: list[str]) -> Iterator[np.ndarray]:
            assert self.tokenizer is not None
            for ids in self.tokenizer.encode_batch(texts):
                if n_docs[0] and eos is not None:
                    buf.append(eos)  # documents are joined by end-of-text
                n_docs[0] += 1
                buf.extend(ids)
                while len(buf) >= S:
                    yield np.asarray(buf[:S], dtype=np.int64)
                    del buf[:S]

        for row in ds:
            if column is None:
                column = "input_ids" if "input_ids" in row else "text"
                self.text_column = column
            if column not in row:
                raise ValueError(f"the dataset {self.name} has no column {column!r}; its columns are {sorted(row)} (pass --text_column)")
            value = row[column]
            if column == "input_ids" or not isinstance(value, str):
                ids = np.asarray(value, dtype=np.int64).reshape(-1)
                for i in range(0, len(ids), S):
                    yield ids[i : i + S]
                continue
            if self.tokenizer is None:
                raise ValueError(f"the dataset {self.name} has text in {column!r}; a tokenizer is needed to tokenize it")
            docs.append(value)
            if len(docs) >= 64:
                yield from flush(docs)
                docs = []
        if docs:
            yield from flush(docs)
        if buf:
            yield np.asarray(buf, dtype=np.int64)


def n_total_batches(source: TokenSource, batch_size: int, n_batches: int | None) -> int | None:
    """Global number of batches a harvest will see (None if the stream's length is unknown)."""
    n_seq = source.n_sequences()
    total = math.ceil(n_seq / batch_size) if n_seq is not None else None
    if n_batches is not None:
        total = n_batches if total is None else min(total, n_batches)
    return total


def rank_batch_count(total: int | None, rank: int, world_size: int) -> int | None:
    """How many of ``total`` global batches fall to ``rank`` (batches rank, rank + world_size, ...)."""
    if total is None:
        return None
    return max(0, (total - rank + world_size - 1) // world_size)


def _batch(tokens: np.ndarray, lengths: np.ndarray, seq_ids: np.ndarray, index: int) -> TokenBatch:
    S = tokens.shape[1]
    mask = None
    if (lengths < S).any():
        mask = torch.from_numpy(np.arange(S)[None, :] < lengths[:, None])
    return TokenBatch(torch.from_numpy(tokens), torch.from_numpy(seq_ids.astype(np.int64)), mask, index)


def sequence_order(n: int, seed: int, shuffle: bool) -> np.ndarray:
    """The order in which a random-access source's sequences are read: a seeded permutation."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g).numpy()


def token_batches(
    source: TokenSource,
    batch_size: int,
    *,
    n_batches: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    skip: int = 0,
) -> Iterator[TokenBatch]:
    """Batches of ``source`` in a deterministic order for ``seed``.

    Global batch g holds sequences ``order[g*B : (g+1)*B]``. This worker yields the
    batches ``g = rank + j * world_size`` for ``j >= skip``, up to the global
    ``n_batches`` (or the end of the data).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    total = n_total_batches(source, batch_size, n_batches)
    g = rank + skip * world_size
    if source.random_access:
        n = source.n_sequences()
        assert n is not None
        order = sequence_order(n, seed, shuffle)
        while total is None or g < total:
            ids = order[g * batch_size : (g + 1) * batch_size]
            if len(ids) == 0:
                return
            tokens, lengths = source.sequences(ids)
            yield _batch(tokens, lengths, ids, g)
            g += world_size
        return
    # a stream: read in order, keep only this worker's batches
    S = source.context_length
    rows: list[np.ndarray] = []
    seq = 0
    current = 0

    def flush() -> TokenBatch:
        tokens = np.zeros((len(rows), S), dtype=np.int64)
        lengths = np.zeros(len(rows), dtype=np.int64)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
            lengths[i] = len(r)
        ids = np.arange(seq - len(rows), seq, dtype=np.int64)
        return _batch(tokens, lengths, ids, current)

    for row in source.stream(seed):
        if total is not None and current >= total:
            return
        rows.append(row)
        seq += 1
        if len(rows) == batch_size:
            if current >= g and (current - rank) % world_size == 0:
                yield flush()
            rows = []
            current += 1
    if rows and (total is None or current < total) and current >= g and (current - rank) % world_size == 0:
        yield flush()


def open_dataset(
    spec: str,
    *,
    context_length: int,
    tokenizer: Tokenizer | None = None,
    token_dtype: str = "uint16",
    split: str = "train",
    text_column: str | None = None,
    shuffle_buffer: int = 0,
    description: str = "",
) -> TokenSource:
    """A `TokenSource` from a command-line ``--dataset`` value.

    ``*.npy`` / ``*.bin`` -> token arrays; ``*.txt``, a folder or a glob -> text files;
    ``demo`` -> the demo model's bundled text; otherwise a Hugging Face dataset
    ``name`` or ``name:config`` (also a local ``json``/``parquet``/``csv`` data file).
    """
    p = Path(spec)
    if spec == "demo":
        tok = tokenizer or Tokenizer.from_file(demo_dir() / "tokenizer.json")
        return TextFileSource(
            [demo_dir() / "demo_text.txt"], tok, context_length, name="demo-text",
            description=description or "held-out Python documentation (pydoc topics not seen in training)",
        )
    if p.suffix in (".npy", ".bin"):
        return ArrayTokenSource.from_file(p, context_length, token_dtype=token_dtype, tokenizer=tokenizer,
                                          description=description)
    if p.suffix == ".txt" or p.is_dir() or any(ch in spec for ch in "*?["):
        if tokenizer is None:
            raise ValueError(f"text files ({spec}) need a tokenizer; pass --tokenizer NAME_OR_PATH")
        return TextFileSource(spec, tokenizer, context_length, description=description)
    if p.suffix in (".json", ".jsonl", ".parquet", ".csv") and p.exists():
        kind = {".jsonl": "json"}.get(p.suffix, p.suffix[1:])
        src = HFStreamSource(kind, tokenizer, context_length, split="train", text_column=text_column,
                             shuffle_buffer=shuffle_buffer, description=description, data_files=str(p))
        src.name = p.name
        return src
    name, _, config = spec.partition(":")
    return HFStreamSource(name, tokenizer, context_length, config=config or None, split=split, text_column=text_column,
                          shuffle_buffer=shuffle_buffer, description=description)


def check_vocab(source: TokenSource, model_vocab: int | None) -> None:
    """Refuse a tokenizer whose ids do not fit the model's vocabulary (before any forward pass)."""
    tv = source.vocab_size
    if tv is not None and model_vocab is not None and tv > model_vocab:
        raise ValueError(
            f"the tokenizer ({source.tokenizer.name if source.tokenizer else '?'}) has {tv} tokens but the model's "
            f"vocabulary has {model_vocab}: they do not belong together; use the model's own tokenizer (--tokenizer)"
        )

