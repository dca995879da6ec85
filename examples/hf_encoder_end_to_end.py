"""A Hugging Face encoder (BERT) end to end: probe, harvest, interpret, score, report.

    python examples/hf_encoder_end_to_end.py      # writes under $AUTOINTERP_EXAMPLE_OUT, else a temp folder

Nothing is downloaded: the script trains a small WordPiece tokenizer on a few
sentences with ``tokenizers``, builds a tiny ``BertModel`` from a ``BertConfig``
(random weights), saves both in a folder and harvests it as ``hf:<folder>``,
the way a real checkpoint would be. For a real run, point ``hf:`` at a model
name or folder and ``dataset`` at real text; the steps are the same:

1. ``probe_layers`` looks at a few batches and suggests a threshold per layer
   (GELU neurons are slightly positive almost everywhere: 0 would make a quarter
   of all tokens "fire"), passed on as ``threshold={layer: value}``.
2. ``run_harvest`` loads the checkpoint by what it is: a BERT encoder has no
   next-token head, so the base model is loaded and output statistics are off
   (it says so in one line).
3. ``Interpreter`` labels the components; without ``ANTHROPIC_API_KEY`` here it
   is the offline token-lookup baseline (pass ``make_backend("anthropic")`` for Claude).
4. ``score_run`` judges the labels (the token-match baseline without a key).
5. ``write_report`` writes the static HTML report; WordPiece text reads as words
   (``##`` pieces joined) in the prompts, the scorers' prompts and the report.
"""

import os
import tempfile
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from autointerp.harvest import load_harvest
from autointerp.interpret import Interpreter
from autointerp.llm.factory import make_backend
from autointerp.paths import RunPaths
from autointerp.probe import format_probe, probe_layers
from autointerp.report import write_report
from autointerp.run_harvest import HarvestOptions, run_harvest
from autointerp.scoring import score_run

SENTENCES = [
    "This license shall be governed by the laws of California.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "The package maintainer uploaded version 1.2.3 to fix bug #12345 in the changelog.",
    "Send questions to the debian mailing list: debian-devel@lists.debian.org.",
    "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.",
    "Redistribution and use in source and binary forms, with or without modification, are permitted.",
]

out = Path(os.environ.get("AUTOINTERP_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="autointerp-bert-"))
model_dir, text_file = out / "tiny-bert", out / "licences.txt"
model_dir.mkdir(parents=True, exist_ok=True)
text_file.write_text("\n".join(SENTENCES * 40) + "\n", encoding="utf-8")

# -- a WordPiece tokenizer and a BERT encoder, built here ---------------------------------------------
tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
tok.normalizer = normalizers.BertNormalizer(lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tok.decoder = decoders.WordPiece()
tok.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(
    vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
tok.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                     sep_token="[SEP]", mask_token="[MASK]").save_pretrained(model_dir)
torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
transformers.BertModel(config).save_pretrained(model_dir)

# -- 1. choose a threshold per layer ------------------------------------------------------------------
layers = ["encoder.layer.0.intermediate.intermediate_act_fn", "encoder.layer.1.intermediate.intermediate_act_fn"]
opts = HarvestOptions(target=f"hf:{model_dir}", layers=layers, dataset=str(text_file), context_length=32,
                      batch_size=8, n_batches=6, out=str(out), run_id="tiny-bert", device="cpu",
                      checkpoint_every=0, overwrite=True, progress=False)
probed = probe_layers(opts, n_batches=2, target_density=0.02)
print(format_probe(probed))
opts.threshold = {p.name: p.suggested for p in probed}

# -- 2. harvest ---------------------------------------------------------------------------------------
run_harvest(opts)
paths = RunPaths.of("tiny-bert", out)
harvest = load_harvest(paths.harvest)
print(harvest)
print("tokenizer kind:", harvest.config.tokenizer_kind, "| thresholds:", harvest.config.layer_thresholds)

# -- 3. interpret (offline baseline without a key), 4. score, 5. report -------------------------------
busiest = sorted((c for c in harvest if c.firing_count), key=lambda c: -c.firing_count)[:12]
keys = [c.key for c in busiest]
Interpreter(make_backend("auto", role="label"), progress=False).run(harvest, paths, keys=keys)
print(score_run(paths, backend=make_backend("auto", role="judge"), scorers=["detection", "fuzzing"],
                progress=False).table())
print("report:", write_report(paths))
