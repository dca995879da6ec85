"""``hf:`` targets load by what the checkpoint is (issue 12 item 1).

A causal LM only when the checkpoint has a trained LM head (a tied head counts:
its weights are the trained input embeddings); otherwise the base model
(``AutoModel``) with output statistics off and a one-line notice saying why.
A head that transformers would initialise from scratch is never used. Every
model is built from a config and saved to a tmp folder: no download.
"""

from __future__ import annotations

import json

import pytest
import torch

from autointerp.adapters.targets import TargetRequest, load_target
from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest

transformers = pytest.importorskip("transformers")

SMALL = ["--n_batches", "2", "--batch_size", "2", "--context_length", "16", "--no_progress", "--device", "cpu",
         "--dataset", "demo"]


def _tokenizer():
    from autointerp.adapters.demo import demo_dir

    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(demo_dir() / "tokenizer.json"),
                                                eos_token="<|endoftext|>")


def save_gpt2(folder, head: bool = True):
    """A GPT-2 causal LM (head tied to the embeddings); ``head=False`` saves it without its head weights."""
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=2048, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=head)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    if head:
        model.save_pretrained(folder)
    else:  # the body only, under the causal LM's config: a checkpoint whose head was never saved
        model.transformer.save_pretrained(folder)
        cfg.architectures = ["GPT2LMHeadModel"]
        cfg.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return model


def save_bert(folder, cls=None):
    """A BERT-style encoder: its base model (``BertModel``) or ``cls`` (e.g. ``BertForMaskedLM``)."""
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=2048, max_position_embeddings=64)
    torch.manual_seed(0)
    model = (cls or transformers.BertModel)(cfg)
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return model


def load(folder, layers, output_probs="auto"):
    return load_target(TargetRequest(f"hf:{folder}", layers=layers, output_probs=output_probs))


def test_gpt2_with_a_tied_head_loads_the_causal_lm(tmp_path):
    saved = save_gpt2(tmp_path / "gpt2")
    target = load(tmp_path / "gpt2", ["transformer.h.0.mlp.act"])
    fn = target.harvest_fn
    assert type(fn.model).__name__ == "GPT2LMHeadModel" and fn.output_probs is True
    assert not target.notices
    # the head is the saved one (tied to the saved embeddings), not a fresh one
    torch.testing.assert_close(fn.model.lm_head.weight, saved.transformer.wte.weight)
    tokens = torch.randint(0, 2048, (1, 8))
    torch.testing.assert_close(fn(tokens).output_probs, torch.softmax(saved.eval()(tokens).logits, -1))


def test_bert_encoder_loads_the_base_model_with_outputs_off_and_says_why(tmp_path):
    save_bert(tmp_path / "bert")
    target = load(tmp_path / "bert", ["encoder.layer.0.intermediate.intermediate_act_fn"])
    fn = target.harvest_fn
    assert type(fn.model).__name__ == "BertModel" and fn.output_probs is False
    assert len(target.notices) == 1 and "\n" not in target.notices[0]
    assert "no trained causal LM head" in target.notices[0] and "output-token statistics are off" in target.notices[0]
    assert fn(torch.randint(0, 2048, (1, 8))).output_probs is None


def test_masked_lm_head_is_not_a_next_token_head(tmp_path):
    # BertForMaskedLM's head is trained, but to fill masks: its predictions are not "what comes next"
    save_bert(tmp_path / "mlm", transformers.BertForMaskedLM)
    target = load(tmp_path / "mlm", ["encoder.layer.0.intermediate"])
    assert target.harvest_fn.output_probs is False and "BertForMaskedLM" in target.notices[0]


def test_checkpoint_saved_without_its_head_is_never_given_a_random_one(tmp_path):
    save_gpt2(tmp_path / "headless", head=False)
    target = load(tmp_path / "headless", ["h.0.mlp.act"])
    fn = target.harvest_fn
    assert type(fn.model).__name__ == "GPT2Model" and fn.output_probs is False
    assert "lm_head.weight" in target.notices[0]
    with pytest.raises(ValueError, match=r"--output_probs on.*no trained.*lm_head\.weight.*--output_probs auto"):
        load(tmp_path / "headless", ["h.0.mlp.act"], output_probs="on")


def test_output_probs_off_keeps_the_causal_model_and_its_layer_names(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    fn = load(tmp_path / "gpt2", ["transformer.h.0.mlp.act"], output_probs="off").harvest_fn
    assert type(fn.model).__name__ == "GPT2LMHeadModel" and fn.output_probs is False


def test_output_probs_on_for_an_encoder_is_a_clear_error(tmp_path):
    save_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"hf:.*--output_probs on.*BertModel"):
        load(tmp_path / "bert", ["encoder.layer.0.intermediate"], output_probs="on")


def test_unknown_output_probs_value_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"output_probs.*auto, on, off.*'sometimes'"):
        load(tmp_path, ["x"], output_probs="sometimes")


def test_cli_harvest_of_an_encoder_prints_the_notice_and_harvests_no_output_tokens(tmp_path, capsys):
    save_bert(tmp_path / "bert")
    layer = "encoder.layer.1.intermediate.intermediate_act_fn"
    code = cli_main(["harvest", f"hf:{tmp_path / 'bert'}", "--layers", layer, "--out", str(tmp_path / "out"),
                     "--run_id", "bert", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no trained causal LM head" in captured.out + captured.err
    cfg = json.loads((tmp_path / "out" / "bert" / "harvest" / "config.json").read_text())
    assert "OutputProbAcc" not in [a["type"] for a in cfg["accumulators"]]
    assert cfg["model"]["class"] == "BertModel" and "no trained causal LM head" in cfg["model"]["output_probs"]
    result = load_harvest(tmp_path / "out" / "bert" / "harvest")
    assert all(c.output_tokens is None for c in result)


def test_cli_output_probs_on_without_a_head_fails_before_any_work(tmp_path, capsys):
    save_bert(tmp_path / "bert")
    code = cli_main(["harvest", f"hf:{tmp_path / 'bert'}", "--layers", "encoder.layer.0.intermediate",
                     "--output_probs", "on", "--out", str(tmp_path / "out"), *SMALL])
    assert code == 2 and "--output_probs on" in capsys.readouterr().err


def test_prompt_describes_only_the_evidence_the_harvest_has(tmp_path, capsys):
    # issue 12 item 7: an encoder's harvest has no output tokens, so its prompt says nothing about them
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend

    save_bert(tmp_path / "bert")
    assert cli_main(["harvest", f"hf:{tmp_path / 'bert'}", "--layers", "encoder.layer.1.intermediate",
                     "--no_correlations", "--out", str(tmp_path / "out"), "--run_id", "bert", *SMALL]) == 0
    harvest = load_harvest(tmp_path / "out" / "bert" / "harvest")
    comp = max(harvest, key=lambda c: c.firing_count)
    parts = Interpreter(OfflineBackend()).render(comp, harvest)
    text = parts["system"] + parts["prompt"]
    assert "Output-token statistics" not in text and "PREDICTS next" not in text
    assert "## Output tokens" not in text
    assert "Co-firing components" not in text  # --no_correlations
    assert "Input-token statistics" in text and "## Input tokens" in text  # what was harvested stays
