"""The two controls every real label is reported next to.

* **shuffled** (the random-label control): the real labels permuted between the
  scored components by a derangement with a fixed seed, so no component keeps
  its own label. A scorer that rewards these measures something other than the
  label; published detection/fuzzing numbers for random labels are near 0.51.
* **token_lookup**: the offline label made from the component's top tokens
  (`autointerp.llm.offline.token_lookup_label`). A label that cannot beat plain
  token lookup is not an explanation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import evolve

from autointerp.heldout import DEFAULT_N_EXPLAIN, DEFAULT_N_TOP, ExampleSplit, split_examples
from autointerp.schemas import ComponentData
from autointerp.scoring.evidence import component_rng

LABEL_SOURCES = ("label", "shuffled", "token_lookup")
#: the one label source of a scorer that reads no label (intruder)
NO_LABEL = "none"


def derangement(keys: Sequence[str], seed: int = 0) -> dict[str, str]:
    """A permutation of ``keys`` with no fixed point, ``{key: key whose label it gets}``.

    Uniform over derangements (rejection sampling: about e tries). Fewer than two
    keys have none: the result is empty.
    """
    keys = list(keys)
    if len(keys) < 2:
        return {}
    rng = component_rng(seed, "derangement", len(keys))
    while True:
        perm = keys[:]
        rng.shuffle(perm)
        if all(a != b for a, b in zip(keys, perm)):
            return dict(zip(keys, perm))


def shuffled_labels(labels: Mapping[str, str], seed: int = 0) -> dict[str, str]:
    """Each component gets another component's label (`derangement` of the sorted keys)."""
    donor = derangement(sorted(labels), seed)
    return {k: labels[d] for k, d in donor.items()}


def token_lookup_labels(
    components: Sequence[ComponentData],
    n_explain: int = DEFAULT_N_EXPLAIN,
    n_top: int = DEFAULT_N_TOP,
    splits: Mapping[str, ExampleSplit | None] | None = None,
    kind: str | None = None,
) -> dict[str, str]:
    """The token-lookup label of each component, from what the explainer could see.

    Without token statistics `token_lookup_label` falls back to the firing tokens
    of the examples; it is given only the explained ones (``splits[key]``, else
    ``split_examples(c, n_explain, n_top)``), never the held-out examples it is
    about to be scored on. ``kind``: the harvest's ``tokenizer_kind`` (tokens shown as they read).
    """
    from autointerp.llm.offline import token_lookup_label

    out = {}
    for c in components:
        if c.input_tokens is None:
            split = (splits or {}).get(c.key) or split_examples(c, n_explain, n_top)
            c = evolve(c, examples=split.explain, top_examples=split.explain_top)
        out[c.key] = token_lookup_label(c, kind=kind)
    return out
