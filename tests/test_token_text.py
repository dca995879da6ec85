"""Text rendered by the tokenizer's own rules (issue 12 item 3), with real `tokenizers` objects built here."""

from __future__ import annotations

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from autointerp.data import Tokenizer as OurTokenizer  # noqa: E402
from autointerp.token_text import detect_tokenizer_kind, segments, token_string, token_texts, window_text  # noqa: E402

SENTENCES = [
    "This license shall be governed by California law.",
    "Aalto's e-mail: debian@lists.debian.org, isn't it?",
    "Café — naïve façade! Version 1.2.3 (bug #12345).",
    "the quick brown fox jumps over the lazy dog",
] * 5


def wordpiece() -> Tokenizer:
    t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    t.normalizer = normalizers.BertNormalizer(lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.decoder = decoders.WordPiece()
    t.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]", "[CLS]", "[SEP]"]))
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", t.token_to_id("[CLS]")), ("[SEP]", t.token_to_id("[SEP]"))])
    return t


def byte_level() -> Tokenizer:
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return t


def metaspace() -> Tokenizer:
    t = Tokenizer(models.Unigram())
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Metaspace()
    t.train_from_iterator(SENTENCES, trainers.UnigramTrainer(vocab_size=100, special_tokens=["<s>", "</s>", "<unk>"],
                                                             unk_token="<unk>"))
    return t


def metaspace_byte_fallback() -> Tokenizer:
    """Llama-style: a BPE with byte fallback, decoded by Replace ▁ + ByteFallback + Fuse + Strip."""
    t = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    t.train_from_iterator([s.replace("é", "").replace("ç", "").replace("ï", "") for s in SENTENCES],
                          trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", *bytes_]))
    return t


KINDS = [(wordpiece, "wordpiece"), (byte_level, "byte_level"), (metaspace, "metaspace"),
         (metaspace_byte_fallback, "metaspace")]


@pytest.mark.parametrize("make,kind", KINDS, ids=[k[0].__name__ for k in KINDS])
def test_kind_detected_from_the_tokenizer(make, kind):
    tok = make()
    assert detect_tokenizer_kind(tok) == kind
    assert detect_tokenizer_kind(OurTokenizer(tok)) == kind
    assert OurTokenizer(tok).kind == kind


@pytest.mark.parametrize("make,kind", KINDS, ids=[k[0].__name__ for k in KINDS])
def test_rendered_windows_decode_like_the_tokenizer(make, kind):
    tok = make()
    ours = OurTokenizer(tok)
    table = [ours.decode(i) for i in range(tok.get_vocab_size())]  # what the harvest records
    for sentence in SENTENCES[:4]:
        ids = tok.encode(sentence).ids
        want = tok.decode(ids, skip_special_tokens=False)
        # the whole sequence, and windows cut at every start (a window may begin mid-word)
        assert window_text([table[i] for i in ids], kind) == want, sentence
        for start in range(1, len(ids) - 1):
            window = ids[start:]
            got = window_text([table[i] for i in window], kind)
            ref = tok.decode(window, skip_special_tokens=False)
            if kind == "wordpiece" and ref.startswith("##"):
                ref = ref[2:]  # a window that starts inside a word shows the piece, not its "##"
            assert got == ref, (sentence, start)


def test_wordpiece_is_not_glued_and_loses_its_hashes():
    tok = wordpiece()
    table = [OurTokenizer(tok).decode(i) for i in range(tok.get_vocab_size())]
    ids = tok.encode("This license shall be governed by California law.").ids
    before = "".join(table[i] for i in ids)  # the old rendering: pieces glued
    assert "##" in before and " " not in before
    assert window_text([table[i] for i in ids], "wordpiece") == "[CLS] this license shall be governed by california law. [SEP]"


def test_old_harvests_keep_todays_rendering():
    assert window_text(["th", "##is", " a"], None) == "th##is a"


@pytest.mark.parametrize("make,kind", KINDS, ids=[k[0].__name__ for k in KINDS])
def test_segments_keep_every_token_index_in_order(make, kind):
    tok = make()
    ours = OurTokenizer(tok)
    ids = tok.encode(SENTENCES[2]).ids
    strings = [ours.decode(i) for i in ids]
    segs = segments(strings, kind)
    assert [i for _, i in segs if i is not None] == list(range(len(ids)))
    per_token = token_texts(strings, kind)
    assert len(per_token) == len(ids)
    assert "".join(per_token) == window_text(strings, kind)


def test_token_string_of_a_partial_character_keeps_its_bytes():
    tok = byte_level()
    ours = OurTokenizer(tok)
    strings = [ours.decode(i) for i in tok.encode("— ok").ids]
    assert all("\ufffd" not in s for s in strings)
    assert window_text(strings, "byte_level") == "— ok"
    assert token_string(tok, tok.token_to_id("<|endoftext|>"), "byte_level") == "<|endoftext|>"


# -- through a harvest: the prompt and the report read as the text ----------------------


def harvest_with(make, sentence: str, fires_on: str):
    """A real HarvestLoop over one sentence whose one component fires on the piece ``fires_on``."""
    import torch

    from autointerp.accumulators import TopActivationAcc
    from autointerp.batch import HarvestBatch
    from autointerp.harvest import HarvestLoop

    tok = make()
    ours = OurTokenizer(tok)
    ids = tok.encode(sentence).ids
    target = tok.token_to_id(fires_on)
    acts = torch.tensor([[[0.5 + i / 10 if t == target else 0.0] for i, t in enumerate(ids)]])
    loop = HarvestLoop([TopActivationAcc(k=4, context_tokens=len(ids))], threshold=0.0,
                       vocab_size=tok.get_vocab_size(), decode=ours.decode, tokenizer_kind=ours.kind, progress=False)
    loop.update(HarvestBatch(tokens=torch.tensor([ids]), activations={"h.0.mlp": acts}))
    # training is not deterministic: a test decodes with this very tokenizer
    return loop.finalize(), ids, acts[0, :, 0].tolist(), tok


def test_prompt_reads_as_the_text_with_the_firing_token_marked():
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend

    harvest, _, _, _ = harvest_with(wordpiece, "Aalto's e-mail: debian@lists.debian.org, isn't it?", "debian")
    assert harvest.config.tokenizer_kind == "wordpiece"
    parts = Interpreter(OfflineBackend(), progress=False).render(harvest["h.0.mlp:0"], harvest)
    assert "e - mail : <<debian>> @ lists. <<debian>>. org, isn ' t it?" in parts["prompt"], parts["prompt"]
    example = next(line for line in parts["prompt"].splitlines() if "<<debian>>" in line)
    assert "##" not in example and "aalto" in example
    assert "a leading space is part of the token" not in parts["system"]
    assert "a space is never part of a token" in parts["system"]


def test_prompt_of_an_old_harvest_is_unchanged():
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend

    harvest, _, _, _ = harvest_with(byte_level, "shall be governed", "Ġb")
    harvest.config.tokenizer_kind = None  # as read from a config.json written before the field
    parts = Interpreter(OfflineBackend(), progress=False).render(harvest["h.0.mlp:0"], harvest)
    assert "shall<< b>>e governed" in parts["prompt"]
    assert "a leading space is part of the token" in parts["system"]


@pytest.mark.parametrize("make,kind,fires_on", [(byte_level, "byte_level", "Ġ"), (metaspace, "metaspace", "▁"),
                                                (wordpiece, "wordpiece", ".")])
def test_report_tokens_stay_aligned_with_activations(make, kind, fires_on, tmp_path):
    from autointerp.report.page_data import ChunkShaper, expand_chunk
    from autointerp.report.run_data import RunData

    harvest, ids, acts, tok = harvest_with(make, SENTENCES[2], fires_on)
    ex = harvest["h.0.mlp:0"].top_examples[0]
    comp = {"key": "h.0.mlp:0", "top_examples": [{"tokens": ex.tokens, "token_ids": ex.token_ids,
                                                   "activations": ex.activations, "firing_offset": ex.firing_offset}]}
    chunk, _ = ChunkShaper(RunData({"layers": []}, []), kind, None).shape([comp])
    view = expand_chunk(chunk)[0]["top_examples"][0]  # raw tokens and the chunk's token table, as the viewer reads them
    assert len(view["t"]) == len(view["a"]) == len(ids)
    assert "".join(view["t"]) == tok.decode(ids, skip_special_tokens=False)
    for text, a, want in zip(view["t"], view["a"], acts):
        assert a == pytest.approx(want, rel=1e-2)
    assert view["a"][view["f"]] > 0


# -- the offline labeller names tokens as they read -------------------------------------


def _label_of(make, sentence: str, pick, tmp_path):
    """The offline label of one component of a real harvest (input-token statistics and examples)
    that fires on the first token of ``sentence`` that ``pick`` accepts; and that token's piece."""
    import torch

    from autointerp.accumulators import InputTokenAcc, TopActivationAcc
    from autointerp.batch import HarvestBatch
    from autointerp.harvest import HarvestLoop
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend

    tok = make()
    ours = OurTokenizer(tok)
    ids = tok.encode(sentence).ids
    pieces = [tok.id_to_token(i) for i in ids]
    target = ids[next(i for i, p in enumerate(pieces) if pick(p))]
    acts = torch.tensor([[[1.0 if t == target else 0.0] for t in ids]] * 3)
    loop = HarvestLoop([InputTokenAcc(top_k=5), TopActivationAcc(k=4, context_tokens=6)], threshold=0.0,
                       vocab_size=tok.get_vocab_size(), decode=ours.decode, tokenizer_kind=ours.kind, progress=False)
    loop.update(HarvestBatch(tokens=torch.tensor([ids] * 3), activations={"h.0.mlp": acts}))
    harvest = loop.finalize()
    (result,) = Interpreter(OfflineBackend(), progress=False).run(harvest, tmp_path)
    return result.label, tok.id_to_token(target), harvest


def test_the_offline_label_reads_a_wordpiece_continuation_as_text(tmp_path):
    label, piece, harvest = _label_of(wordpiece, "This license shall be governed by California law.",
                                      lambda p: p.startswith("##") and len(p) > 2, tmp_path)
    assert harvest.config.tokenizer_kind == "wordpiece"
    assert label == f"fires on {piece[2:]!r}" and "##" not in label  # a continuation: no hashes, no space
    # the scorers' token-lookup control names it the same way
    from autointerp.scoring.baselines import token_lookup_labels

    assert token_lookup_labels([harvest["h.0.mlp:0"]], kind="wordpiece") == {"h.0.mlp:0": label}
    word, piece, _ = _label_of(wordpiece, "This license shall be governed by California law.",
                               lambda p: p.isalpha() and len(p) > 2, tmp_path / "w")
    assert word == f"fires on {' ' + piece!r}"  # a word start reads with its space, as byte-level tokens do


def test_the_offline_label_reads_sentencepiece_and_byte_level_tokens_as_text(tmp_path):
    label, piece, _ = _label_of(metaspace, "the quick brown fox", lambda p: p.startswith("▁") and len(p) > 1, tmp_path)
    assert "▁" in piece and "▁" not in label and label == f"fires on {piece.replace('▁', ' ')!r}"
    label, piece, _ = _label_of(byte_level, "shall be governed", lambda p: p.startswith("Ġ") and len(p) > 1, tmp_path / "b")
    assert "Ġ" not in label and label == f"fires on {piece.replace('Ġ', ' ')!r}"


def test_token_alone_by_kind():
    from autointerp.token_text import token_alone

    assert token_alone("##g", "wordpiece") == "g" and token_alone("sourc", "wordpiece") == " sourc"
    assert token_alone(".", "wordpiece") == "." and token_alone("▁the", "metaspace") == " the"
    assert token_alone("<0xE2>", "metaspace") == "<0xE2>" and token_alone(" the", "byte_level") == " the"
    assert token_alone("##g", None) == "##g" and token_alone(None, "wordpiece") is None
