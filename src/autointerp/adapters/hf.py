"""An ``hf:<name or path>`` target: a Hugging Face causal LM, harvested through forward hooks.

``--layers`` names the module paths to capture (their output, or their input with
``--capture input``); without it the error lists the model's module paths. The
tokenizer is the model's own unless ``--tokenizer`` names another.
"""

from __future__ import annotations

from autointerp.adapters.targets import Target, TargetRequest
from autointerp.data import Tokenizer

#: the default context length is the model's own, capped at this (docs/harvest.md)
MAX_DEFAULT_CONTEXT = 512


def load_hf_target(request: TargetRequest) -> Target:
    name = request.spec.removeprefix("hf:")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise ImportError("hf: targets need transformers: pip install 'autointerp[hf]'") from e
    from autointerp.adapters.hooks import HookHarvestFn, resolve_modules

    try:
        model = AutoModelForCausalLM.from_pretrained(name)
    except OSError as e:  # transformers reports a missing repo or folder as OSError
        raise ValueError(
            f"could not load the Hugging Face model {name!r} (target 'hf:{name}'): {str(e).rstrip('.')}. "
            "Give a hub name such as hf:gpt2 (needs network access or a filled HF cache) "
            "or a local folder holding config.json and the weights"
        ) from None
    if request.dtype is not None:
        model.to(device=request.device, dtype=request.dtype)
    else:
        model.to(request.device)
    model.eval()
    if not request.layers:
        resolve_modules(model, ["(give --layers)"])  # raises, listing the module paths
    fn = HookHarvestFn(model, list(request.layers or []), capture=request.capture)  # type: ignore[arg-type]
    fn.description["name"] = name
    tok = Tokenizer.from_pretrained(request.tokenizer or name)
    ctx = fn.context_length
    return Target(fn, tokenizer=tok,
                  default_context_length=min(ctx, MAX_DEFAULT_CONTEXT) if ctx else MAX_DEFAULT_CONTEXT)
