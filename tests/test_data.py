"""Token sources: arrays (.npy, .bin memmap), text files, Hugging Face datasets (local files, streamed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autointerp.adapters.demo import demo_dir
from autointerp.data import (
    ArrayTokenSource,
    HFStreamSource,
    TextFileSource,
    Tokenizer,
    check_vocab,
    open_dataset,
    token_batches,
)


def rows_of(batches):
    return {int(s): tb.tokens[i].tolist() for tb in batches for i, s in enumerate(tb.sequence_ids)}


@pytest.fixture
def tokens_npy(tmp_path):
    arr = np.arange(1000, dtype=np.int32) % 97
    path = tmp_path / "tokens.npy"
    np.save(path, arr)
    return path, arr


def test_npy_stream_is_cut_into_windows_with_global_ids(tokens_npy):
    path, arr = tokens_npy
    src = ArrayTokenSource.from_file(path, context_length=64)
    assert src.n_sequences() == 16  # ceil(1000 / 64); the last window is 40 tokens
    batches = list(token_batches(src, batch_size=5, seed=3))
    rows = rows_of(batches)
    assert sorted(rows) == list(range(16))
    for sid, row in rows.items():
        chunk = arr[sid * 64 : sid * 64 + 64]
        assert row[: len(chunk)] == chunk.tolist()
    last = next(tb for tb in batches if 15 in tb.sequence_ids.tolist())
    i = tb_index = last.sequence_ids.tolist().index(15)
    assert last.mask is not None and last.mask[i].sum() == 40 and tb_index == i


def test_order_is_deterministic_for_a_seed_and_differs_between_seeds(tokens_npy):
    src = ArrayTokenSource.from_file(tokens_npy[0], context_length=32)
    ids = lambda seed: [tb.sequence_ids.tolist() for tb in token_batches(src, batch_size=4, seed=seed)]
    assert ids(0) == ids(0)
    assert ids(0) != ids(1)
    assert [tb.sequence_ids.tolist() for tb in token_batches(src, batch_size=4, shuffle=False)][0] == [0, 1, 2, 3]


def test_rank_striding_partitions_the_batches_and_skip_resumes(tokens_npy):
    src = ArrayTokenSource.from_file(tokens_npy[0], context_length=16)
    full = list(token_batches(src, batch_size=3, n_batches=10, seed=1))
    assert [tb.index for tb in full] == list(range(10))
    parts = [list(token_batches(src, batch_size=3, n_batches=10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert sorted(tb.index for p in parts for tb in p) == list(range(10))
    assert [tb.index for tb in parts[1]] == [1, 4, 7]
    for p in parts:
        for tb in p:
            assert torch.equal(tb.tokens, full[tb.index].tokens)
    resumed = list(token_batches(src, batch_size=3, n_batches=10, seed=1, rank=1, world_size=3, skip=1))
    assert [tb.index for tb in resumed] == [4, 7]


def test_bin_memmap_and_2d_npy(tmp_path):
    arr = (np.arange(300) % 50).astype(np.uint16)
    arr.tofile(tmp_path / "t.bin")
    src = open_dataset(str(tmp_path / "t.bin"), context_length=100)
    assert isinstance(src.array, np.memmap) and src.n_sequences() == 3
    assert rows_of(token_batches(src, 2, shuffle=False))[2] == arr[200:300].tolist()
    two = np.arange(40).reshape(4, 10)
    np.save(tmp_path / "rows.npy", two)
    src2 = open_dataset(str(tmp_path / "rows.npy"), context_length=8)
    assert rows_of(token_batches(src2, 4))[3] == two[3, :8].tolist()
    with pytest.raises(ValueError, match="rows of 10 tokens, shorter than context_length 12"):
        open_dataset(str(tmp_path / "rows.npy"), context_length=12)


def test_empty_datasets_are_refused(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        open_dataset(str(tmp_path / "empty.bin"), context_length=8)
    (tmp_path / "empty.txt").write_text("")
    tok = Tokenizer.from_file(demo_dir() / "tokenizer.json")
    with pytest.raises(ValueError, match="is empty"):
        open_dataset(str(tmp_path / "empty.txt"), context_length=8, tokenizer=tok)


def test_text_files_are_tokenized_and_packed(tmp_path):
    tok = Tokenizer.from_file(demo_dir() / "tokenizer.json")
    (tmp_path / "a.txt").write_text("def main():\n    return 42\n")
    (tmp_path / "b.txt").write_text("The for statement iterates over a sequence.")
    src = open_dataset(str(tmp_path), context_length=8, tokenizer=tok)
    assert isinstance(src, TextFileSource)
    ids = np.asarray(src.array).tolist()
    eos = tok.eos_id
    assert eos is not None and ids.count(eos) == 1  # two documents joined by one end-of-text
    text = "".join(tok.decode(t) for t in ids if t != eos)
    assert "def main():" in text and "iterates over a sequence" in text


def test_hf_dataset_streamed_from_a_local_file_packs_documents(tmp_path):
    pytest.importorskip("datasets")
    tok = Tokenizer.from_file(demo_dir() / "tokenizer.json")
    docs = [f"Document number {i} talks about lists and dictionaries." for i in range(20)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    src = open_dataset(str(path), context_length=16, tokenizer=tok)
    assert isinstance(src, HFStreamSource)
    batches = list(token_batches(src, batch_size=4, seed=0))
    all_ids = [t for tb in batches for row, m in zip(tb.tokens.tolist(), (tb.mask.tolist() if tb.mask is not None else [None] * len(tb.tokens))) for t, keep in zip(row, m or [True] * 16) if keep]
    expected = []
    for d in tok.encode_batch(docs):
        if expected:
            expected.append(tok.eos_id)
        expected.extend(d)
    assert all_ids == expected
    assert [int(s) for tb in batches for s in tb.sequence_ids] == list(range(len(rows_of(batches))))
    # workers and skipping give the same rows (streams re-read the prefix; no model runs)
    part = list(token_batches(src, batch_size=4, rank=1, world_size=2, skip=1))
    assert [tb.index for tb in part] == [i for i in range(3, len(batches), 2)]
    assert torch.equal(part[0].tokens, batches[3].tokens)


def test_pretokenized_input_ids_column(tmp_path):
    pytest.importorskip("datasets")
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(json.dumps({"input_ids": list(range(i, i + 10))}) for i in range(5)))
    src = open_dataset(str(path), context_length=10)
    rows = rows_of(token_batches(src, batch_size=2))
    assert rows[4] == list(range(4, 14))


def test_tokenizer_vocabulary_larger_than_the_model_is_refused():
    tok = Tokenizer.from_file(demo_dir() / "tokenizer.json")
    src = ArrayTokenSource(np.arange(10), 5, tokenizer=tok)
    with pytest.raises(ValueError, match=r"has 2048 tokens but the model's vocabulary has 100"):
        check_vocab(src, 100)
    check_vocab(src, 2048)


def test_a_token_file_with_a_negative_id_is_refused_when_opened(tmp_path):
    """Issue 10 item 11: the error names the file, the id and where it is, before any batch is read."""
    import numpy as np

    from autointerp.data import ArrayTokenSource

    arr = np.arange(100, dtype=np.int32)
    arr[37] = -5
    np.save(tmp_path / "toks.npy", arr)
    with pytest.raises(ValueError, match=r"toks\.npy holds the negative token id -5 at position 37"):
        ArrayTokenSource.from_file(tmp_path / "toks.npy", context_length=10)
    ok = np.arange(100, dtype=np.uint16)
    np.save(tmp_path / "ok.npy", ok)
    assert ArrayTokenSource.from_file(tmp_path / "ok.npy", context_length=10).n_sequences() == 10
