"""The logit lens: weight-based output evidence per component (issue 12 item 2).

Checked against a hand computation in plain loops, on models built from configs
here (GPT-2 with Conv1D weights, a BERT-style encoder with no head, a Llama-style
RMSNorm model), an SAE's decoder, SPD U vectors, and the embedded demo model end
to end (harvest file, prompt, report).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autointerp.adapters.hooks import HookHarvestFn
from autointerp.adapters.output_directions import find_unembedding, final_norm_of
from autointerp.logit_lens import FinalNorm, OutputDirections, Unembedding, component_logit_lens, logit_lens_topk

transformers = pytest.importorskip("transformers")


def lens_by_hand(direction, W_U, kind, weight):
    """Plain loops: norm the direction as the field does, then one dot product per token."""
    d = list(direction)
    if kind == "layernorm":
        mean = sum(d) / len(d)
        d = [x - mean for x in d]
    if kind != "none":
        d = [x * w for x, w in zip(d, weight)]
    return [sum(u * x for u, x in zip(row, d)) for row in W_U]


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm", "none"])
def test_three_token_vocabulary_matches_a_hand_computation(kind):
    W_U = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [-2.0, 1.0, 1.0]]
    weight = [2.0, 0.5, -1.0]
    dirs = [[0.3, -1.2, 0.7], [-1.0, 2.0, 0.5]]
    norm = FinalNorm(kind, torch.tensor(weight) if kind != "none" else None)
    top = logit_lens_topk(torch.tensor(dirs), torch.tensor(W_U), norm=norm, k=3)
    for r, d in enumerate(dirs):
        logits = lens_by_hand(d, W_U, kind, weight)
        order = sorted(range(3), key=lambda v: -logits[v])
        assert top.promoted_ids[r].tolist() == order
        assert top.suppressed_ids[r].tolist() == order[::-1]
        assert top.promoted_logits[r].tolist() == pytest.approx([logits[v] for v in order], abs=1e-6)


def test_blocks_bound_memory_and_give_the_same_answer():
    g = torch.Generator().manual_seed(0)
    dirs, W_U = torch.randn(37, 8, generator=g), torch.randn(50, 8, generator=g)
    norm = FinalNorm("layernorm", torch.rand(8, generator=g) + 0.5)
    whole = logit_lens_topk(dirs, W_U, norm=norm, k=5)
    blocked = logit_lens_topk(dirs, W_U, norm=norm, k=5, block_elements=120)  # two rows a block
    assert torch.equal(whole.promoted_ids, blocked.promoted_ids)
    assert torch.equal(whole.suppressed_ids, blocked.suppressed_ids)
    half = logit_lens_topk(dirs.half(), W_U.bfloat16(), norm=norm, k=5)  # low-precision weights are read in float32
    assert half.promoted_logits.dtype == torch.float32


def test_a_direction_outside_the_residual_stream_is_refused_by_name():
    with pytest.raises(ValueError, match="d=4 but the unembedding has d=8"):
        logit_lens_topk(torch.zeros(2, 4), torch.zeros(10, 8))
    u = Unembedding(torch.zeros(10, 8))
    lenses, skipped = component_logit_lens({"a": OutputDirections(torch.zeros(3, 4), "rows of a")}, u, widths={"a": 3, "b": 2})
    assert lenses == {} and "4-dimensional" in skipped["a"] and "no output direction" in skipped["b"]


def expected(direction, unembedding: torch.Tensor, norm: nn.Module | None, centre: bool):
    d = direction.float()
    if centre:
        d = d - d.mean()
    if norm is not None:
        d = d * norm.weight.float()
    return (unembedding.float() @ d).argsort(descending=True)[:5].tolist()


def run_once(fn: HookHarvestFn, vocab: int):
    fn(torch.randint(0, vocab, (1, 6)))  # the widths are known after a batch
    return fn.unembedding(), fn.output_directions()


def test_gpt2_conv1d_out_rows_after_ln_f():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16, n_inner=48)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.uniform_(0.5, 1.5)
    layers = ["transformer.h.0.mlp.act", "transformer.h.1.mlp.c_fc"]
    fn = HookHarvestFn(model, layers)
    u, dirs = run_once(fn, 40)
    assert u.norm.kind == "layernorm" and u.norm.name == "transformer.ln_f" and "lm_head" in u.name
    for layer, i in zip(layers, range(2)):
        W = model.transformer.h[i].mlp.c_proj.weight  # Conv1D: [in = n_inner, out = n_embd]
        assert tuple(W.shape) == (48, 16)
        assert torch.equal(dirs[layer].weight, W)
    # the input of c_proj is the same neurons
    fn_in = HookHarvestFn(model, ["transformer.h.0.mlp.c_proj"], capture="input")
    assert torch.equal(run_once(fn_in, 40)[1]["transformer.h.0.mlp.c_proj"].weight, dirs[layers[0]].weight)
    lenses, _ = component_logit_lens(dirs, u, widths={l: 48 for l in layers}, k=5)
    got = [t.token_id for t in lenses["transformer.h.0.mlp.act:7"].promoted]
    assert got == expected(model.transformer.h[0].mlp.c_proj.weight[7], model.lm_head.weight, model.transformer.ln_f, True)


def test_a_residual_stream_layer_has_no_direction():
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16)
    fn = HookHarvestFn(transformers.GPT2LMHeadModel(cfg).eval(), ["transformer.h.0.mlp"])
    assert run_once(fn, 40)[1] == {}


def test_bert_encoder_without_a_head_uses_tied_word_embeddings_and_no_norm():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=40, max_position_embeddings=16)
    model = transformers.BertModel(cfg, add_pooling_layer=True).eval()
    fn = HookHarvestFn(model, ["encoder.layer.1.intermediate"], output_probs=False)
    u, dirs = run_once(fn, 30)
    assert u.norm.kind == "none", "the embedding LayerNorm comes before the blocks and must not be taken as final"
    assert "tied input embeddings" in u.name and torch.equal(u.weight, model.embeddings.word_embeddings.weight)
    W = model.encoder.layer[1].output.dense.weight  # nn.Linear: [out = hidden, in = intermediate]
    assert torch.equal(dirs["encoder.layer.1.intermediate"].weight, W.T)
    lenses, _ = component_logit_lens(dirs, u, widths={"encoder.layer.1.intermediate": 40}, k=5)
    got = [t.token_id for t in lenses["encoder.layer.1.intermediate:3"].promoted]
    assert got == expected(W[:, 3], model.embeddings.word_embeddings.weight, None, False)


def test_bert_masked_lm_does_not_take_the_head_transform_as_final_norm():
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=40, max_position_embeddings=16)
    u = find_unembedding(transformers.BertForMaskedLM(cfg).eval())
    assert u is not None and u.norm.kind == "none" and u.weight.shape == (30, 16)


def test_llama_rmsnorm_and_down_proj_columns():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 1.5)
    fn = HookHarvestFn(model, ["model.layers.1.mlp.act_fn"])
    u, dirs = run_once(fn, 40)
    assert u.norm.kind == "rmsnorm" and u.norm.name == "model.norm"
    W = model.model.layers[1].mlp.down_proj.weight  # [hidden, intermediate]
    assert torch.equal(dirs["model.layers.1.mlp.act_fn"].weight, W.T)
    lenses, _ = component_logit_lens(dirs, u, widths={"model.layers.1.mlp.act_fn": 24}, k=5)
    got = [t.token_id for t in lenses["model.layers.1.mlp.act_fn:5"].promoted]
    assert got == expected(W[:, 5], model.lm_head.weight, model.model.norm, False)


def test_gemma_style_rmsnorm_scales_by_one_plus_weight():
    class GemmaRMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([0.0, 1.0]))

    n = final_norm_of(GemmaRMSNorm())
    assert n.kind == "rmsnorm" and n.weight.tolist() == [1.0, 2.0]


class TinySAE(nn.Module):
    def __init__(self, d: int, c: int):
        super().__init__()
        self.W_enc = nn.Parameter(torch.randn(d, c))
        self.W_dec = nn.Parameter(torch.randn(c, d))

    def encode(self, x):
        return torch.relu(x @ self.W_enc)


def test_sae_latents_use_their_decoder_rows():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    sae = TinySAE(16, 64)
    fn = HookHarvestFn(model, ["transformer.h.0"], encode=sae.encode)
    _, dirs = run_once(fn, 40)
    assert torch.equal(dirs["transformer.h.0"].weight, sae.W_dec) and "TinySAE" in dirs["transformer.h.0"].name


def test_spd_components_use_their_u_vectors():
    from autointerp.adapters.spd import SPDHarvestFn

    class Components(nn.Module):
        def __init__(self, c, d_in, d_out):
            super().__init__()
            self.V, self.U = nn.Parameter(torch.randn(d_in, c)), nn.Parameter(torch.randn(c, d_out))

    class ComponentModel(nn.Module):  # the attributes of spd's ComponentModel the lens reads
        def __init__(self):
            super().__init__()
            cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16)
            self.target_model = transformers.GPT2LMHeadModel(cfg).eval()
            self.target_module_paths = ["transformer.h.0.mlp.c_proj", "transformer.h.0.mlp.c_fc"]
            self.components = {"transformer.h.0.mlp.c_proj": Components(5, 64, 16),
                               "transformer.h.0.mlp.c_fc": Components(5, 16, 64)}

    cm = ComponentModel()
    fn = SPDHarvestFn(cm)
    u = fn.unembedding()
    assert u.norm.name == "transformer.ln_f"
    lenses, skipped = component_logit_lens(fn.output_directions(), u, widths={p: 5 for p in cm.target_module_paths}, k=3)
    assert "transformer.h.0.mlp.c_proj:4" in lenses and "64-dimensional" in skipped["transformer.h.0.mlp.c_fc"]
    got = [t.token_id for t in lenses["transformer.h.0.mlp.c_proj:4"].promoted]
    U = cm.components["transformer.h.0.mlp.c_proj"].U[4].detach()
    assert got == expected(U, cm.target_model.lm_head.weight, cm.target_model.transformer.ln_f, True)[:3]


def test_demo_harvest_stores_the_lens_and_shows_it_in_prompt_and_report(tmp_path):
    from autointerp.adapters.demo import load_demo
    from autointerp.harvest import load_harvest
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend
    from autointerp.report.notebook import component_html
    from autointerp.run_harvest import HarvestOptions, run_harvest

    opts = HarvestOptions(target="demo", n_batches=1, batch_size=2, context_length=32, out=str(tmp_path),
                          run_id="lens", progress=False, correlations=False, window_pool=False, input_tokens=False)
    logs: list[str] = []
    run_harvest(opts, log=logs.append)
    assert any("output logits (weight-based) for 2,048 components in 4 layers" in m for m in logs)
    result = load_harvest(tmp_path / "lens" / "harvest")
    comp = result["blocks.2.mlp.act:11"]
    demo = load_demo()
    m = demo.model
    want = expected(m.blocks[2].mlp.fc_out.weight[:, 11].detach(), m.tok_emb.weight.detach(), m.ln_f, True)
    assert [t.token_id for t in comp.output_logits.promoted][:5] == want
    assert comp.output_logits.promoted[0].token == demo.decode(want[0])
    assert "ln_f" in comp.output_logits.source and "fc_out" in comp.output_logits.source
    # the prompt shows it, for a component that fired or not, and no section where there is none
    interp = Interpreter(OfflineBackend())
    fired = next(c for c in result if c.firing_count > 0)
    prompt = interp.render(fired, result)["prompt"]
    assert "## Output logits" in prompt and "Suppressed:" in prompt
    fired.output_logits = None
    assert "## Output logits" not in interp.render(fired, result)["prompt"]
    assert "Output logits (weights)" in component_html(comp)


def test_page_data_carries_the_lens():
    from autointerp.report.page_data import ChunkShaper, expand_chunk
    from autointerp.report.run_data import RunData

    lens = {"source": "x", "promoted": [{"token_id": 3, "logit": 1.25, "token": " cat"}],
            "suppressed": [{"token_id": 4, "logit": -2.0, "token": None}]}
    chunk, _ = ChunkShaper(RunData({"layers": []}, []), "plain", None).shape([{"key": "h.0:0", "output_logits": lens}])
    rows = expand_chunk(json.loads(json.dumps(chunk)))[0]["output_logits"]
    assert rows["source"] == "x"
    assert rows["promoted"] == [[" cat", 3, 1.25]] and rows["suppressed"] == [["⟨4⟩", 4, -2.0]]


def test_a_job_array_merge_keeps_the_lens(tmp_path):
    from autointerp.harvest import load_harvest
    from autointerp.run_harvest import HarvestOptions, merge_workers, run_harvest

    base = dict(target="demo", n_batches=2, batch_size=2, context_length=32, out=str(tmp_path), run_id="arr",
                progress=False, correlations=False, window_pool=False, input_tokens=False, output_tokens=False,
                layers=["blocks.0.mlp.act"])
    for rank in (0, 1):
        run_harvest(HarvestOptions(**base, rank=rank, world_size=2), log=None)
    merged = merge_workers(tmp_path / "arr", log=None)
    one = run_harvest(HarvestOptions(**{**base, "run_id": "one"}), log=None)
    assert merged["blocks.0.mlp.act:5"].output_logits == one["blocks.0.mlp.act:5"].output_logits is not None
    assert load_harvest(tmp_path / "arr" / "harvest")["blocks.0.mlp.act:5"].output_logits is not None


def test_a_bad_k_is_refused_before_the_pass(tmp_path):
    from autointerp.run_harvest import HarvestOptions, run_harvest

    with pytest.raises(ValueError, match="--output_logits_k must be at least 1, got 0"):
        run_harvest(HarvestOptions(target="demo", output_logits_k=0, out=str(tmp_path)), log=None)
