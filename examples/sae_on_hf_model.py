"""Harvest SAE latents on a Hugging Face model through forward hooks.

    python examples/sae_on_hf_model.py

The model and the SAE here are tiny and random (built from a config: no
download), so the script runs anywhere; for a real run pass your model
(``AutoModelForCausalLM.from_pretrained(...)``) and your SAE's ``encode`` (for
example an SAELens ``sae.encode``), and real token batches.
"""

import torch
import transformers

from autointerp import HarvestLoop, HookHarvestFn, InputTokenAcc, OutputProbAcc, ReservoirAcc, TopActivationAcc

torch.manual_seed(0)
cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64,
                              bos_token_id=0, eos_token_id=0)
model = transformers.GPT2LMHeadModel(cfg).eval()

# a stand-in SAE on the residual stream after block 1: ReLU(W_enc (x - b_dec) + b_enc),
# with the input normalised first (a random model's residual stream is tiny)
d_model, d_sae = 64, 256
W_enc, b_enc, b_dec = torch.randn(d_model, d_sae) / d_model**0.5, torch.full((d_sae,), -1.5), torch.zeros(d_model)


def sae_encode(x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.layer_norm(x, (d_model,))
    return torch.relu((x - b_dec) @ W_enc + b_enc)


# GPT-2 blocks return a tuple; take the hidden states (element 0) before encoding
harvest_fn = HookHarvestFn(model, ["transformer.h.1"], encode=lambda out: sae_encode(out[0] if isinstance(out, tuple) else out))
batches = (harvest_fn(torch.randint(0, 500, (8, 64))) for _ in range(4))
loop = HarvestLoop([ReservoirAcc(k=10, context_tokens=4), TopActivationAcc(k=5, context_tokens=4),
                    InputTokenAcc(), OutputProbAcc()], threshold=0.0, progress=False)
result = loop.run(batches)
print(result)
busiest = max(result, key=lambda c: c.firing_count)
print(busiest, busiest.input_tokens.top_recall[:3])
