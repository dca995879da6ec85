"""The target registry: which kind reads which target string, a new kind, refused duplicates,
and loaders that answer in the `Target` instead of editing the caller's options."""

from __future__ import annotations

import attrs
import pytest

from autointerp.adapters import targets
from autointerp.adapters.demo import DEMO_THRESHOLD, load_demo_target
from autointerp.adapters.targets import Target, TargetKind, TargetRequest, kind_of, register_target
from autointerp.run_harvest import HarvestOptions, run_harvest

SMALL = dict(n_batches=1, batch_size=2, context_length=16, checkpoint_every=0, progress=False, device="cpu",
             layers=["blocks.0.mlp.act"], correlations=False, window_pool=False)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry that the test may add to; the real one is restored afterwards."""
    monkeypatch.setattr(targets, "_KINDS", dict(targets._KINDS))


@pytest.mark.parametrize("spec, kind", [
    ("demo", "demo"),
    ("hf:gpt2", "hf"),
    ("hf:/models/my-llama", "hf"),
    ("tests_helpers.models:make", "function"),
    ("wandb:goodfire/spd/abc123", "spd"),
    ("goodfire/spd/abc123", "spd"),
    ("https://wandb.ai/goodfire/spd/runs/abc123", "spd"),
])
def test_each_built_in_form_goes_to_its_kind(spec, kind):
    assert kind_of(spec).name == kind


def test_an_unknown_form_lists_every_form():
    with pytest.raises(ValueError, match="cannot tell what kind of target 'no-such-thing'") as e:
        kind_of("no-such-thing")
    for kind in targets.target_kinds():
        assert kind.form in str(e.value)


def test_a_duplicate_name_is_refused(registry):
    with pytest.raises(ValueError, match="a target kind named 'demo' is already registered"):
        register_target(TargetKind("demo", lambda s: False, load_demo_target, "another demo"))


def test_a_new_kind_is_asked_before_the_built_in_ones(registry):
    # `zoo:tiny` has the shape of `module:function`: the new kind must still get it
    def load_zoo(request: TargetRequest) -> Target:
        assert request.spec == "zoo:tiny" and request.layers == ["blocks.0.mlp.act"]
        return attrs.evolve(load_demo_target(attrs.evolve(request, spec="demo")), default_threshold=0.25)

    register_target(TargetKind("zoo", lambda s: s.startswith("zoo:"), load_zoo, "`zoo:<name>`"))
    assert kind_of("zoo:tiny").name == "zoo"
    assert kind_of("pkg.module:fn").name == "function"


def test_a_loader_does_not_change_the_callers_options(registry, tmp_path):
    def load_zoo(request: TargetRequest) -> Target:
        demo = load_demo_target(attrs.evolve(request, spec="demo"))
        return attrs.evolve(demo, default_threshold=0.25, default_text_column="body")

    register_target(TargetKind("zoo", lambda s: s.startswith("zoo:"), load_zoo, "`zoo:<name>`"))
    opts = HarvestOptions(target="zoo:tiny", out=str(tmp_path), run_id="zoo", **SMALL)
    before = attrs.asdict(opts)
    result = run_harvest(opts, log=None)
    assert attrs.asdict(opts) == before  # threshold, dataset, text_column all still unset
    assert result.config.threshold == 0.25 and result.config.dataset["name"] == "demo-text"


def test_the_callers_options_win_over_the_targets_defaults(tmp_path):
    opts = HarvestOptions(target="demo", out=str(tmp_path), run_id="t0", threshold=0.0, **SMALL)
    assert run_harvest(opts, log=None).config.threshold == 0.0  # 0.0 is a choice, not "unset"
    opts = attrs.evolve(opts, threshold=None, run_id="t1")
    assert run_harvest(opts, log=None).config.threshold == DEMO_THRESHOLD


def test_a_loader_must_return_a_target(registry):
    register_target(TargetKind("bad", lambda s: s == "bad", lambda request: object(), "`bad`"))
    with pytest.raises(TypeError, match="returned object, expected a Target"):
        targets.load_target(TargetRequest("bad"))
