"""The SPD adapter on the real ``spd`` package, and the stand-in checked against it.

Skipped where ``spd`` is not importable (CI: it is not on PyPI). To run it, install spd
outside the project as docs/harvest.md ("SPD runs") describes and run pytest with that
environment. What is real: spd's ``Config``, ``ComponentModel``, identity insertion,
pattern expansion and ``save_file`` (the functions spd's training uses to write a run
folder), a ``transformers`` GPT-2 saved to a folder, and all of autointerp. What is a
stand-in: ``wandb.Api`` (`spd_standin.StandInApi`, files copied from a local folder; the
service cannot be reached from here). The run's weights are random rather than trained
(spd's training loop takes about a minute on two CPU cores; the weights do not change
what is checked here: the files, names, shapes and the CI computation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
component_model = pytest.importorskip("spd.models.component_model")

from spd.configs import Config  # noqa: E402
from spd.identity_insertion import insert_identity_operations_  # noqa: E402
from spd.utils.module_utils import expand_module_patterns  # noqa: E402
from spd.utils.run_utils import save_file  # noqa: E402
from spd_standin import (  # noqa: E402
    EXPECTED_MODULES,
    StandInApi,
    StandInComponentModel,
    run_config,
    save_target_model,
)

from autointerp.adapters.spd import load_spd_run  # noqa: E402
from autointerp.cli import main as cli_main  # noqa: E402
from autointerp.harvest import load_harvest  # noqa: E402

ComponentModel = component_model.ComponentModel
RUN_ID = "s-1a2b3c4d"


def write_real_run(folder, cfg_dict, steps=(10, 20)):
    """A run folder written as spd's ``run_experiment``/``optimize`` write it (with random weights)."""
    import transformers

    config = Config(**cfg_dict)
    save_file(config.model_dump(mode="json"), folder / "final_config.yaml")
    target = transformers.GPT2LMHeadModel.from_pretrained(config.pretrained_model_name).eval().requires_grad_(False)
    if config.identity_module_info is not None:
        insert_identity_operations_(target, identity_module_info=config.identity_module_info)
    model = ComponentModel(target_model=target, module_path_info=expand_module_patterns(target, config.all_module_info),
                           ci_fn_type=config.ci_fn_type, ci_fn_hidden_dims=config.ci_fn_hidden_dims,
                           sigmoid_type=config.sigmoid_type,
                           pretrained_model_output_attr=config.pretrained_model_output_attr)
    for i, step in enumerate(steps):
        torch.manual_seed(step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(("_ci_fns.", "_components.")):
                    p.normal_(0, 0.5 * (i + 1))
        save_file(model.state_dict(), folder / f"model_{step}.pth")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_target_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def real_run(tmp_path, model_dir):
    return write_real_run(tmp_path / "spd" / RUN_ID, run_config(model_dir))


def spd_ci(folder, tokens, step=20):
    ref = ComponentModel.from_pretrained(folder / f"model_{step}.pth")
    with torch.no_grad():
        out = ref(tokens, cache_type="input")
        return ref.calc_causal_importances(out.cache, sampling="continuous", detach_inputs=True).lower_leaky, out.output


def test_the_adapter_on_a_real_run_folder(real_run):
    fn = load_spd_run(str(real_run))
    assert isinstance(fn.model, ComponentModel)
    assert fn.layers == list(EXPECTED_MODULES) and fn.module_to_c == EXPECTED_MODULES
    tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    batch = fn(tokens)
    batch.validate()
    ci, logits = spd_ci(real_run, tokens)
    for p in EXPECTED_MODULES:
        assert torch.equal(batch.activations[p], ci[p])
    torch.testing.assert_close(batch.output_probs, torch.softmax(logits.float(), -1))
    dirs = fn.output_directions()
    assert dirs["transformer.h.1.mlp.c_proj"].weight.shape == (5, 16)


def test_the_wandb_form_with_a_stand_in_download(real_run, tmp_path):
    fn = load_spd_run(f"wandb:goodfire/spd/runs/{RUN_ID}", api=StandInApi(real_run), cache_dir=tmp_path / "cache")
    assert isinstance(fn.model, ComponentModel) and fn.layers == list(EXPECTED_MODULES)
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(2))
    ci, _ = spd_ci(real_run, tokens)
    assert all(torch.equal(fn(tokens).activations[p], ci[p]) for p in EXPECTED_MODULES)


@pytest.mark.parametrize("variant", ["vector_mlp", "embedding"])
def test_the_stand_in_loads_a_real_checkpoint_and_computes_the_same_ci(tmp_path, model_dir, variant):
    """The stand-in in tests/spd_standin.py has spd's names and shapes (a strict state-dict load of a
    real checkpoint), spd's config fields (spd's Config accepts its run_config) and spd's CI call."""
    kw = {} if variant == "vector_mlp" else {
        "module_info": [{"module_pattern": "transformer.wte", "C": 4}, {"module_pattern": "transformer.h.0.mlp.c_fc", "C": 6}],
        "identity_module_info": None, "ci_fn_type": "mlp"}
    folder = write_real_run(tmp_path / variant, run_config(model_dir, **kw))
    real = ComponentModel.from_pretrained(folder / "model_20.pth")
    stand_in = StandInComponentModel.from_pretrained(str(folder / "model_20.pth"))  # strict load
    assert stand_in.target_module_paths == real.target_module_paths and stand_in.module_to_c == real.module_to_c
    assert {k: tuple(v.shape) for k, v in stand_in.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in real.state_dict().items()}
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        r, s = real(tokens, cache_type="input"), stand_in(tokens, cache_type="input")
        assert set(r.cache) == set(s.cache) and torch.equal(r.output, s.output)
        rc = real.calc_causal_importances(r.cache, sampling="continuous", detach_inputs=True)
        sc = stand_in.calc_causal_importances(s.cache, sampling="continuous", detach_inputs=True)
    assert type(rc).__name__ == type(sc).__name__ == "CIOutputs"
    for p in real.target_module_paths:
        torch.testing.assert_close(sc.lower_leaky[p], rc.lower_leaky[p])
        torch.testing.assert_close(sc.pre_sigmoid[p], rc.pre_sigmoid[p])
        torch.testing.assert_close(stand_in.components[p].U, real.components[p].U)


def test_cli_harvest_of_a_real_run(real_run, tmp_path):
    np.save(tmp_path / "tokens.npy", (np.arange(16 * 8) * 7 % 50).astype(np.int64))
    out = tmp_path / "out"
    code = cli_main(["harvest", str(real_run), "--dataset", str(tmp_path / "tokens.npy"), "--batch_size", "4",
                     "--out", str(out), "--run_id", "spd-real", "--no_progress", "--device", "cpu"])
    assert code == 0
    result = load_harvest(out / "spd-real" / "harvest")
    assert {l.name: l.width for l in result.config.layers} == EXPECTED_MODULES
    assert len(result) == sum(EXPECTED_MODULES.values()) and result.n_fired() > 0
