"""What a module path is, in words: the one table of layer-role names.

The explainer's prompt says where a component lives ("MLP up-projection in layer
3 of 12"). Two places guess that from a module path: the hook adapter when it
describes the layers it harvests (`autointerp.adapters.hooks.describe_layer`),
and the interpreter when a harvest came without descriptions
(`autointerp.interpret.describe_layer`). Both read this table (the adapter also passes the module's class, so a ``GELU``
module is named as an MLP's neurons whatever its path), so a gate
projection is called a gate projection whichever path the words took.

>>> layer_role("model.layers.3.mlp.gate_proj")
'MLP gate projection'
>>> layer_role("transformer.h.0.attn.c_attn")
'attention query/key/value projection'
>>> layer_role("encoder.conv") is None
True

A name matches as a whole word of the path: ``.`` and ``_`` (and the ends)
bound it, so ``wo`` matches ``mlp.wo`` but not ``word_embeddings``, and
``resid`` matches ``hook_resid_pre``. The first role whose names match wins, so
specific names (``query_key_value``) come before the general ones they contain
(``query``, ``mlp``).
"""

from __future__ import annotations

import re

from attrs import frozen

__all__ = ["LAYER_ROLES", "LayerRole", "layer_role"]


@frozen
class LayerRole:
    """One role: its words, and the path names (whole words, see the module docstring) that mean it."""

    words: str
    names: tuple[str, ...]

    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(re.escape(n) for n in self.names)
        return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


#: every role, first match wins. Conventions: HF Llama/Mistral (gate_proj, up_proj,
#: down_proj), GPT-2 (c_fc, c_proj, c_attn), GPT-J/NeoX (fc_in, dense_h_to_4h,
#: query_key_value), T5 (wi, wo), Meta Llama (wq, wo under ``attention.``, w1-w3),
#: TransformerLens hook points (hook_post, hook_z, hook_resid_pre, ...).
LAYER_ROLES: tuple[LayerRole, ...] = (
    # BERT-style: intermediate.dense is the up-projection, intermediate's own output is act(dense(x))
    LayerRole("MLP up-projection", ("intermediate.dense",)),
    LayerRole("MLP neurons (after the nonlinearity)",
              ("hook_post", "mlp.act", "act", "act_fn", "activation_fn", "hook_mid", "intermediate",
               "intermediate_act_fn", "gelu", "silu", "relu", "swish", "geglu", "swiglu")),
    LayerRole("MLP neurons (before the nonlinearity)", ("hook_pre",)),
    # fused before the separate projections: query_key_value contains "query"
    LayerRole("attention query/key/value projection", ("c_attn", "qkv", "Wqkv", "query_key_value")),
    LayerRole("attention query projection", ("q_proj", "hook_q", "q", "wq", "w_q", "query")),
    LayerRole("attention key projection", ("k_proj", "hook_k", "k", "wk", "w_k", "key")),
    LayerRole("attention value projection", ("v_proj", "hook_v", "v", "wv", "w_v", "value")),
    # before the MLP roles: Meta's Llama calls the attention output attention.wo, T5's MLP wo
    LayerRole("attention output projection",
              ("o_proj", "attn.c_proj", "out_proj", "hook_z", "attn.out", "attention.wo", "w_o",
               "attention.output.dense", "attention.output")),
    # w1 and w3: Meta's gated MLP is w2(silu(w1 x) * w3 x), a two-matrix MLP is w2(act(w1 x));
    # "up-projection" is true of both, "gate" would be wrong for one of them
    LayerRole("MLP up-projection",
              ("up_proj", "c_fc", "fc_in", "fc1", "dense_h_to_4h", "w_in", "mlp_in", "wi", "w1", "w3")),
    LayerRole("MLP gate projection", ("gate_proj",)),
    LayerRole("MLP down-projection",
              ("down_proj", "mlp.c_proj", "fc_out", "fc2", "dense_4h_to_h", "w_out", "wo", "w2", "output.dense")),
    LayerRole("residual stream", ("resid", "hook_resid_pre", "hook_resid_mid", "hook_resid_post")),
    LayerRole("position embedding", ("wpe", "pos_embed", "embed_positions")),
    LayerRole("token embedding", ("wte", "embed_tokens", "tok_emb", "embed", "hook_embed")),
    LayerRole("MLP", ("mlp", "hook_mlp_out")),
    LayerRole("attention", ("attn", "attention", "self_attn", "hook_attn_out")),
)

_COMPILED = tuple((role.pattern(), role.words) for role in LAYER_ROLES)

#: activation modules (torch's and transformers'): in a transformer their output is the MLP's neurons
_ACTIVATION_CLASS = re.compile(r"(?i)(gelu|silu|swish|relu|mish|glu|activation|quickgelu|tanh|sigmoid)")


def layer_role(path: str, module_class: str | None = None) -> str | None:
    """The words for what the module at ``path`` is (see `LAYER_ROLES`), or None when no name matches.

    ``module_class`` (the module's class name) decides where the path says nothing
    specific: a ``GELU`` / ``SiLU`` / ``GELUActivation`` module is an MLP's neurons
    after the nonlinearity, whatever it is called (``blocks.2.ff.1``).

    >>> layer_role("blocks.2.ff.1", "GELU")
    'MLP neurons (after the nonlinearity)'
    """
    words = next((words for pattern, words in _COMPILED if pattern.search(path)), None)
    if module_class and _ACTIVATION_CLASS.search(module_class) and words in (None, "MLP"):
        return "MLP neurons (after the nonlinearity)"
    return words
