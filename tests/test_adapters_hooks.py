"""HookHarvestFn on small Hugging Face models built from a config (no download).

TransformerLens: its hook names are module paths of ``HookPoint`` modules
(``model.hook_dict``); the hook-name path is tested on a stand-in with a
``hook_dict`` always, and on a real TransformerLens model when the package is
importable: a ``TransformerBridge`` (TransformerLens >= 4) around a tiny GPT-2, or
a ``HookedTransformer`` (< 4). transformer_lens is a development dependency
(``pip install -e ".[dev]"``), so CI runs that test; a user environment without
it skips the test with its reason.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autointerp.adapters.hooks import HookHarvestFn, describe_layer, softmax_float32
from autointerp.harvest import HarvestLoop
from autointerp.accumulators import ReservoirAcc, OutputProbAcc

transformers = pytest.importorskip("transformers")


def tiny_gpt2(vocab: int = 64) -> nn.Module:
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def tiny_llama(vocab: int = 64) -> nn.Module:
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                                   num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=32,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_gpt2_mlp_outputs_match_a_manual_forward():
    model = tiny_gpt2()
    layers = ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"]
    fn = HookHarvestFn(model, layers)
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    batch = fn(tokens)
    batch.validate()
    assert [tuple(a.shape) for a in batch.activations.values()] == [(3, 10, 128)] * 2
    # the neuron values are what the MLP computes: act(c_fc(ln_2(resid)))
    captured = {}
    h = model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, a, o: captured.setdefault("pre", o))
    logits = model(tokens).logits
    h.remove()
    expected = model.transformer.h[0].mlp.act(captured["pre"])
    torch.testing.assert_close(batch.activations[layers[0]], expected)
    torch.testing.assert_close(batch.output_probs, torch.softmax(logits.float(), -1))
    desc = fn.description
    assert desc["class"] == "GPT2LMHeadModel" and desc["n_layers"] == 2
    assert desc["layer_descriptions"][layers[1]].startswith("MLP neurons (after the nonlinearity) in layer 1 of 2")
    assert fn.vocab_size == 64 and fn.context_length == 32


def test_llama_capture_input_of_down_proj_equals_output_of_act_product():
    model = tiny_llama()
    fn = HookHarvestFn(model, ["model.layers.1.mlp.down_proj"], capture="input")
    tokens = torch.randint(0, 64, (2, 8))
    batch = fn(tokens)
    acts = batch.activations["model.layers.1.mlp.down_proj"]
    assert acts.shape == (2, 8, 48)  # the MLP's hidden neurons
    assert "MLP down-projection in layer 1 of 2" in fn.description["layer_descriptions"]["model.layers.1.mlp.down_proj"]
    loop = HarvestLoop([ReservoirAcc(k=3, context_tokens=2), OutputProbAcc()], progress=False)
    loop.update(batch)
    assert len(loop.finalize()) == 48


def test_encode_turns_captures_into_latents():
    model = tiny_gpt2()
    W = torch.randn(32, 100, generator=torch.Generator().manual_seed(0))
    fn = HookHarvestFn(model, ["transformer.h.1"], encode=lambda x: torch.relu(x @ W))
    batch = fn(torch.randint(0, 64, (2, 6)))
    # a GPT-2 block returns a tuple; its first element is the residual stream
    assert batch.activations["transformer.h.1"].shape == (2, 6, 100)
    assert float(batch.activations["transformer.h.1"].min()) >= 0


def test_unknown_layer_lists_the_available_ones():
    with pytest.raises(ValueError) as e:
        HookHarvestFn(tiny_gpt2(), ["transformer.h.0.mlp.actt"])
    msg = str(e.value)
    assert "unknown layer 'transformer.h.0.mlp.actt'" in msg
    assert "Did you mean transformer.h.0.mlp.act" in msg
    assert "transformer.h.1.mlp.c_proj" in msg  # the list of module paths


def test_width_change_between_batches_is_a_clear_error():
    class Varying(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.width = 4
            self.layer = nn.Identity()

        def forward(self, tokens):
            x = self.layer(self.emb(tokens)[..., : self.width])
            return torch.zeros(*tokens.shape, 10)

    m = Varying()
    fn = HookHarvestFn(m, ["layer"], vocab_size=10)
    fn(torch.zeros(1, 3, dtype=torch.long))
    m.width = 3
    with pytest.raises(ValueError, match=r"layer widths changed between batches: layer: 4 -> 3"):
        fn(torch.zeros(1, 3, dtype=torch.long))


def test_context_length_longer_than_the_model_is_refused():
    fn = HookHarvestFn(tiny_gpt2(), ["transformer.h.0.mlp.act"])
    with pytest.raises(ValueError, match="longer than the model's context length 32"):
        fn(torch.zeros(1, 33, dtype=torch.long))


def test_chunked_float32_softmax_equals_one_shot():
    logits = torch.randn(3, 7, 50).to(torch.bfloat16)
    out = softmax_float32(logits, chunk_rows=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.softmax(logits.float(), -1))


def test_transformer_lens_style_hook_names_on_a_stand_in():
    """A module with a ``hook_dict`` of identity hook points, as HookedTransformer has."""

    class HookPoint(nn.Identity):
        pass

    class StandIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.blocks = nn.ModuleList([nn.Module()])
            self.blocks[0].mlp = nn.Module()
            self.blocks[0].mlp.hook_post = HookPoint()
            self.unembed = nn.Linear(8, 20)

        @property
        def hook_dict(self):
            return {n: m for n, m in self.named_modules() if isinstance(m, HookPoint)}

        def forward(self, tokens):
            return self.unembed(self.blocks[0].mlp.hook_post(torch.relu(self.emb(tokens))))

    fn = HookHarvestFn(StandIn(), ["blocks.0.mlp.hook_post"])
    assert fn(torch.randint(0, 20, (2, 5))).activations["blocks.0.mlp.hook_post"].shape == (2, 5, 8)
    with pytest.raises(ValueError, match="The available hook names are:\n  blocks.0.mlp.hook_post"):
        HookHarvestFn(StandIn(), ["blocks.0.hook_resid_post"])
    assert describe_layer("blocks.0.mlp.hook_post", 1).startswith("MLP neurons (after the nonlinearity) in layer 0 of 1")


def test_real_transformer_lens_model():
    """TransformerLens >= 4 wraps a HF model in a ``TransformerBridge``; < 4 builds a ``HookedTransformer``."""
    tl = pytest.importorskip(
        "transformer_lens",
        reason="transformer_lens is not installed (it comes with the dev extras: pip install -e '.[dev]')",
    )
    torch.manual_seed(0)
    try:
        HookedTransformer, HookedTransformerConfig = tl.HookedTransformer, tl.HookedTransformerConfig
    except (ImportError, AttributeError):
        HookedTransformer = None
    if HookedTransformer is not None:
        cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=32, d_head=16, n_heads=2, d_vocab=64, act_fn="relu")
        model, hf_act = HookedTransformer(cfg), None
    else:
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

        from autointerp.adapters.demo import demo_dir

        hf = tiny_gpt2(vocab=2048)
        tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(demo_dir() / "tokenizer.json"),
                                                   eos_token="<|endoftext|>")
        cfg = TransformerBridgeConfig(d_model=32, d_head=16, n_heads=2, n_layers=2, n_ctx=32, d_vocab=2048, d_mlp=128,
                                      architecture="GPT2LMHeadModel")
        model = tl.TransformerBridge(hf, ArchitectureAdapterFactory.select_architecture_adapter(cfg), tok)
        hf_act = hf.transformer.h[1].mlp.act
    fn = HookHarvestFn(model, ["blocks.1.mlp.hook_post"])
    tokens = torch.randint(0, 64, (2, 6))
    batch = fn(tokens)
    batch.validate()
    assert batch.activations["blocks.1.mlp.hook_post"].shape == (2, 6, 128)
    assert fn.description["layer_descriptions"]["blocks.1.mlp.hook_post"].startswith(
        "MLP neurons (after the nonlinearity) in layer 1 of 2")
    if hf_act is not None:  # the bridge's hook point sees exactly the HF model's neurons
        captured = {}
        h = hf_act.register_forward_hook(lambda m, a, o: captured.setdefault("x", o))
        hf(tokens)
        h.remove()
        torch.testing.assert_close(batch.activations["blocks.1.mlp.hook_post"], captured["x"])


# issue 12 item 7: MLP activations in common architectures are named as MLP neurons
@pytest.mark.parametrize("path, cls, words", [
    ("encoder.layer.3.intermediate", "BertIntermediate", "MLP neurons (after the nonlinearity)"),
    ("encoder.layer.3.intermediate.intermediate_act_fn", "GELUActivation", "MLP neurons (after the nonlinearity)"),
    ("encoder.layer.3.intermediate.dense", "Linear", "MLP up-projection"),
    ("encoder.layer.3.output.dense", "Linear", "MLP down-projection"),
    ("encoder.layer.3.attention.output.dense", "Linear", "attention output projection"),
    ("gpt_neox.layers.1.mlp.act", "GELUActivation", "MLP neurons (after the nonlinearity)"),
    ("model.layers.1.mlp.act_fn", "SiLUActivation", "MLP neurons (after the nonlinearity)"),
    ("blocks.2.ff.2", "GELU", "MLP neurons (after the nonlinearity)"),  # the path says nothing: the class does
    ("blocks.2.ff.1", "SiLU", "MLP neurons (after the nonlinearity)"),
    ("blocks.2.mlp.gelu", "Identity", "MLP neurons (after the nonlinearity)"),
])
def test_layer_descriptions_recognise_mlp_activations(path, cls, words):
    from autointerp.layer_roles import layer_role

    assert layer_role(path, cls) == words
    module = type(cls, (nn.Module,), {})()
    assert describe_layer(path, 4, "output", module).startswith(words)


def test_bert_intermediate_neurons_are_described_as_mlp_neurons():
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=64, max_position_embeddings=32)
    model = transformers.BertModel(cfg).eval()
    layers = ["encoder.layer.1.intermediate", "encoder.layer.1.intermediate.intermediate_act_fn"]
    fn = HookHarvestFn(model, layers, output_probs=False)
    for layer in layers:
        assert fn.description["layer_descriptions"][layer].startswith(
            "MLP neurons (after the nonlinearity) in layer 1 of 2")
