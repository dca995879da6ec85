"""An ``hf:<name or path>`` target: a Hugging Face model, harvested through forward hooks.

``--layers`` names the module paths to capture (their output, or their input with
``--capture input``); without it the error lists the model's module paths. The
tokenizer is the model's own unless ``--tokenizer`` names another.

What is loaded depends on what the checkpoint is (`choose_model_class`). A causal
LM (``AutoModelForCausalLM``) only when the checkpoint has a trained next-token
head: its config names a causal LM or a base model (never another task's head,
such as ``BertForMaskedLM``), it is not a bidirectional encoder, and loading
initialised no head weight from scratch (a head tied to the trained input
embeddings counts as trained). Otherwise the base model (``AutoModel``), with
output-token statistics off and a one-line notice saying why: a head that would
be random is never used, because its "predicted next tokens" would be noise
presented as fact. ``output_probs`` (``--output_probs``) chooses: ``auto`` (the
above), ``off`` (the same model, no probabilities: layer names do not change),
``on`` (a causal LM or a clear error).
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from autointerp.adapters.targets import Target, TargetRequest
from autointerp.data import Tokenizer

#: the default context length is the model's own, capped at this (docs/harvest.md)
MAX_DEFAULT_CONTEXT = 512

OUTPUT_PROBS_CHOICES = ("auto", "on", "off")


@frozen
class HeadCheck:
    """Whether a checkpoint has a trained next-token head, and in words why not."""

    causal: bool
    why_not: str = ""


def _mapping_names() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    from transformers.models.auto import modeling_auto as m

    return m.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, m.MODEL_FOR_MASKED_LM_MAPPING_NAMES, m.MODEL_MAPPING_NAMES


def _as_names(names: Any) -> set[str]:
    # mapping values are a class name or a tuple of names
    out: set[str] = set()
    for v in names:
        out.update(v if isinstance(v, (tuple, list)) else (v,))
    return out


def config_head_check(config: Any) -> HeadCheck:
    """What the config alone says: a next-token head can exist only for a causal or a base architecture."""
    causal, masked, base = _mapping_names()
    model_type = getattr(config, "model_type", None)
    if model_type not in causal:
        return HeadCheck(False, f"transformers has no causal LM class for model type {model_type!r}")
    archs = list(getattr(config, "architectures", None) or [])
    known = _as_names(causal.values()) | _as_names(base.values())
    if archs and not any(a in known for a in archs):
        return HeadCheck(False, f"the checkpoint is a {', '.join(archs)}, whose head is trained for another task")
    if model_type in masked and not getattr(config, "is_decoder", False) and not getattr(config, "causal", False):
        # BERT-family encoders attend both ways: their causal class needs is_decoder=True to mean "next token"
        what = f"a {', '.join(archs)}: " if archs else ""
        return HeadCheck(False, f"it is {what}a bidirectional {model_type} encoder (is_decoder is not set)")
    return HeadCheck(True)


def load_report_head_check(model: Any, info: dict[str, Any]) -> HeadCheck:
    """What loading said: a head weight missing from the checkpoint (initialised from scratch) means no trained head."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    keys = [k if isinstance(k, str) else k[0] for k in
            [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]]
    head = sorted(k for k in keys if not (prefix and k.startswith(prefix + ".")))
    if head:
        shown = ", ".join(head[:3]) + (f" and {len(head) - 3} more" if len(head) > 3 else "")
        return HeadCheck(False, f"the checkpoint has no weights for its head ({shown}: they would be random)")
    return HeadCheck(True)


def _load(auto_class: Any, name: str, **kw: Any) -> Any:
    try:
        return auto_class.from_pretrained(name, **kw)
    except OSError as e:  # transformers reports a missing repo or folder as OSError
        raise ValueError(
            f"could not load the Hugging Face model {name!r} (target 'hf:{name}'): {str(e).rstrip('.')}. "
            "Give a hub name such as hf:gpt2 (needs network access or a filled HF cache) "
            "or a local folder holding config.json and the weights"
        ) from None


def load_model(name: str, output_probs: str = "auto") -> tuple[Any, bool, str]:
    """``(model, use_probabilities, notice)``: the causal LM when its head is trained, else the base model."""
    if output_probs not in OUTPUT_PROBS_CHOICES:
        raise ValueError(f"output_probs (--output_probs) must be one of {', '.join(OUTPUT_PROBS_CHOICES)}, "
                         f"got {output_probs!r}")
    try:
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    except ImportError as e:
        raise ImportError("hf: targets need transformers: pip install 'autointerp[hf]'") from e
    config = _load(AutoConfig, name)
    check = config_head_check(config)
    model = None
    if check.causal:
        model, info = _load(AutoModelForCausalLM, name, output_loading_info=True)
        check = load_report_head_check(model, info)
    if check.causal:
        return model, output_probs != "off", ""
    if output_probs == "on":
        raise ValueError(
            f"hf:{name} was given --output_probs on, but it has no trained causal LM head: {check.why_not}. "
            "Output-token statistics need the model's own next-token predictions; use --output_probs auto "
            "(the base model, no output statistics) or a causal LM checkpoint"
        )
    del model
    base = _load(AutoModel, name)
    notice = "" if output_probs == "off" else (
        f"hf:{name}: no trained causal LM head ({check.why_not}); loaded the base model "
        f"{type(base).__name__} and output-token statistics are off (--output_probs off silences this)")
    return base, False, notice


def load_hf_target(request: TargetRequest) -> Target:
    name = request.spec.removeprefix("hf:")
    from autointerp.adapters.hooks import HookHarvestFn, resolve_modules

    model, use_probs, notice = load_model(name, request.output_probs)
    if request.dtype is not None:
        model.to(device=request.device, dtype=request.dtype)
    else:
        model.to(request.device)
    model.eval()
    if not request.layers:
        resolve_modules(model, ["(give --layers)"])  # raises, listing the module paths
    fn = HookHarvestFn(model, list(request.layers or []), capture=request.capture,  # type: ignore[arg-type]
                       output_probs=use_probs)
    fn.description["name"] = name
    fn.description["output_probs"] = "on: the checkpoint's trained next-token head" if use_probs else (
        notice.split(": ", 1)[1] if notice else "off (--output_probs off)")
    tok = Tokenizer.from_pretrained(request.tokenizer or name)
    ctx = fn.context_length
    return Target(fn, tokenizer=tok, notices=(notice,) if notice else (),
                  default_context_length=min(ctx, MAX_DEFAULT_CONTEXT) if ctx else MAX_DEFAULT_CONTEXT)
