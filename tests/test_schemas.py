"""The first property of every schema: structure(unstructure(x)) == x, also through JSON."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from autointerp import (
    ActivationExample,
    ComponentCorrelations,
    ComponentData,
    CorrelatedComponent,
    HarvestConfig,
    InterpretationResult,
    LayerSpec,
    ScoreResult,
    TokenStat,
    TokenStats,
    TokenUsage,
)
from autointerp.storage import from_dict, to_dict, to_json

floats = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=12)
small = st.integers(0, 2**40)
json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | floats | text
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=8)


@st.composite
def examples(draw):
    n = draw(st.integers(1, 6))
    return ActivationExample(
        token_ids=draw(st.lists(st.integers(-1, 50_000), min_size=n, max_size=n)),
        activations=draw(st.lists(floats, min_size=n, max_size=n)),
        firing_offset=draw(st.integers(0, n - 1)),
        sequence_index=draw(small),
        position=draw(st.integers(0, 4096)),
        tokens=draw(st.none() | st.lists(text, min_size=n, max_size=n)),
    )


token_stat = st.builds(TokenStat, st.integers(0, 50_000), floats, floats, floats, floats, st.none() | text)
token_stats = st.builds(TokenStats, *(st.lists(token_stat, max_size=3) for _ in range(3)))
partner = st.builds(CorrelatedComponent, text, small, floats, floats, floats)
correlations = st.builds(ComponentCorrelations, *(st.lists(partner, max_size=3) for _ in range(4)))
components = st.builds(
    ComponentData,
    key=text,
    layer=text,
    index=small,
    firing_count=small,
    firing_rate=floats,
    mean_activation=floats,
    max_activation=floats,
    examples=st.lists(examples(), max_size=3),
    top_examples=st.lists(examples(), max_size=2),
    input_tokens=st.none() | token_stats,
    output_tokens=st.none() | token_stats,
    correlations=st.none() | correlations,
    extras=st.dictionaries(text, json_value, max_size=3),
)
configs = st.builds(
    HarvestConfig,
    layers=st.lists(st.builds(LayerSpec, text, st.integers(0, 10**6)), max_size=3),
    threshold=floats,
    seed=small,
    vocab_size=st.none() | st.integers(1, 10**6),
    n_batches=small,
    n_tokens=small,
    accumulators=st.lists(st.dictionaries(text, json_value, max_size=2), max_size=3),
    model=st.dictionaries(text, json_value, max_size=2),
    dataset=st.dictionaries(text, json_value, max_size=2),
    created_at=text,
    autointerp_version=text,
)
usage = st.builds(TokenUsage, small, small, small, small)
interpretations = st.builds(InterpretationResult, text, text, text, text, text, text, text, text, usage, text, floats)
scores = st.builds(
    ScoreResult, text, text, text, text, st.none() | floats, st.dictionaries(text, floats, max_size=3), small,
    st.booleans(), text, text, usage, st.dictionaries(text, json_value, max_size=2), text,
)


def _round_trip(obj, cls):
    assert from_dict(to_dict(obj), cls) == obj
    assert from_dict(json.loads(to_json(obj)), cls) == obj


@given(components)
def test_component_data_round_trip(c):
    _round_trip(c, ComponentData)


@given(configs)
def test_harvest_config_round_trip(c):
    _round_trip(c, HarvestConfig)


@given(interpretations)
def test_interpretation_round_trip(r):
    _round_trip(r, InterpretationResult)


@given(scores)
def test_score_round_trip(r):
    _round_trip(r, ScoreResult)


def test_unknown_keys_from_a_newer_version_are_ignored():
    data = to_dict(TokenStat(3, 1.0, 0.5, 0.25, 1.2))
    data["added_in_v2"] = "ignored"
    assert from_dict(data, TokenStat) == TokenStat(3, 1.0, 0.5, 0.25, 1.2)


def test_example_properties_use_the_firing_offset():
    e = ActivationExample([5, 6, 7], [0.0, 0.1, 0.9], firing_offset=2, sequence_index=4, position=0)
    assert (e.firing_token_id, e.firing_activation) == (7, 0.9)
    assert repr(e).startswith("ActivationExample(seq=4, pos=0, act=0.9")
