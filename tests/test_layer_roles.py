"""The one table of layer-role words: both of its users say the same words for every name in it."""

from __future__ import annotations

import pytest

from autointerp import interpret
from autointerp.adapters import hooks
from autointerp.layer_roles import LAYER_ROLES, layer_role

EVERY_NAME = [(role.words, name) for role in LAYER_ROLES for name in role.names]


@pytest.mark.parametrize(("words", "name"), EVERY_NAME, ids=[n for _, n in EVERY_NAME])
def test_both_users_agree_for_every_name_in_the_table(words, name):
    path = f"model.layers.3.{name}"
    # a name earlier in the table must not shadow this one
    assert layer_role(path) == words
    assert hooks.describe_layer(path, 12).startswith(f"{words} in layer 3 of 12 ({path}")
    assert interpret.describe_layer(path, {"n_layers": 12}) == f"{words} in layer 3 of 12 ({path})"


def test_a_gate_projection_is_a_gate_projection():
    path = "model.layers.0.mlp.gate_proj"
    assert hooks.describe_layer(path, 2).startswith("MLP gate projection in layer 0 of 2")
    assert interpret.describe_layer(path, {"n_layers": 2}).startswith("MLP gate projection in layer 0 of 2")


@pytest.mark.parametrize(("path", "words"), [
    ("transformer.h.0.mlp.act", "MLP neurons (after the nonlinearity)"),
    ("blocks.2.hook_resid_pre", "residual stream"),
    ("transformer.h.1.attn.c_proj", "attention output projection"),
    ("transformer.h.1.mlp.c_proj", "MLP down-projection"),
    ("gpt_neox.layers.0.attention.query_key_value", "attention query/key/value projection"),
    ("layers.5.attention.wo", "attention output projection"),
    ("encoder.block.0.layer.1.DenseReluDense.wo", "MLP down-projection"),
    ("blocks.0.hook_mlp_out", "MLP"),
    ("blocks.0.hook_attn_out", "attention"),
])
def test_real_paths(path, words):
    assert layer_role(path) == words


def test_names_are_whole_words():
    assert layer_role("bert.embeddings.word_embeddings") is None  # "wo" is not a word of it
    assert layer_role("layers.10.w10") is None
    assert layer_role("encoder.conv") is None
    assert hooks.describe_layer("encoder.conv", None) == "module (encoder.conv)"
    assert interpret.describe_layer("encoder.conv", {}) == "encoder.conv"


def test_names_are_unique():
    names = [n for _, n in EVERY_NAME]
    assert len(names) == len(set(names))
