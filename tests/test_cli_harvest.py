"""``autointerp harvest``: options, outputs, and the bad inputs that must fail before any long work."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from autointerp.cli import build_parser
from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest
from autointerp.paths import run_id_for

SMALL = ["--n_batches", "2", "--batch_size", "2", "--context_length", "32", "--no_progress", "--device", "cpu"]


def test_help_explains_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["harvest"]
    for action in sub._actions:
        if action.dest in ("help",):
            continue
        assert action.help, f"option {action.option_strings or action.dest} has no help"
    text = sub.format_help()
    for opt in ("--n_batches", "--batch_size", "--context_length", "--threshold", "--examples_per_component",
                "--context_tokens_per_side", "--seed", "--device", "--dtype", "--out", "--run_id",
                "--checkpoint_every", "--resume", "--rank", "--world_size", "--dataset", "--wandb_project", "--layers"):
        assert opt in text
    assert "hf:NAME_OR_PATH" in text and "module:function" in text


def test_python_dash_m_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "autointerp", "harvest", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--checkpoint_every" in r.stdout


def test_demo_harvest_writes_the_run_folder(tmp_path, capsys):
    assert cli_main(["harvest", "demo", "--out", str(tmp_path), "--layers", "blocks.0.mlp.act,blocks.3.mlp.act",
                     *SMALL]) == 0
    folder = tmp_path / run_id_for("demo") / "harvest"
    result = load_harvest(folder)
    assert len(result) == 2 * 512 and result.config.n_tokens == 2 * 2 * 32
    cfg = json.loads((folder / "config.json").read_text())
    model, dataset = cfg["model"], cfg["dataset"]
    assert model["class"].startswith("TinyLM") and model["n_layers"] == 4
    assert model["layer_descriptions"]["blocks.3.mlp.act"] == "MLP neurons (ReLU output) in layer 3 of 4"
    assert dataset["name"] == "demo-text" and "Python documentation" in dataset["description"]
    assert [a["type"] for a in cfg["accumulators"]][:6] == [
        "FiringStatsAcc", "ReservoirAcc", "TopActivationAcc", "CorrelationAcc", "InputTokenAcc", "OutputProbAcc"]
    assert cfg["accumulators"][1]["k"] == 40 and cfg["accumulators"][2]["k"] == 20
    fired = next(c for c in result if c.examples)
    ex = fired.examples[0]
    assert ex.tokens is not None and len(ex.tokens) == len(ex.token_ids)
    out = capsys.readouterr().out
    assert "a few components" in out and str(folder) in out


def test_unknown_layer_lists_available_ones(tmp_path, capsys):
    code = cli_main(["harvest", "demo", "--layers", "blocks.0.mlp.act,blocks.9.mlp", "--out", str(tmp_path), *SMALL])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown layer 'blocks.9.mlp'" in err and "blocks.3.mlp.act" in err


def test_context_length_longer_than_the_model_is_refused(tmp_path, capsys):
    code = cli_main(["harvest", "demo", "--out", str(tmp_path), "--context_length", "256", "--no_progress"])
    assert code == 2
    assert "--context_length 256 is longer than the model's context length 128" in capsys.readouterr().err


def test_empty_dataset_is_refused(tmp_path, capsys):
    (tmp_path / "empty.bin").write_bytes(b"")
    code = cli_main(["harvest", "demo", "--dataset", str(tmp_path / "empty.bin"), "--out", str(tmp_path), *SMALL])
    assert code == 2 and "is empty" in capsys.readouterr().err


def test_empty_or_wrong_column_stream_is_refused(tmp_path, capsys):
    pytest.importorskip("datasets")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    code = cli_main(["harvest", "demo", "--dataset", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path), *SMALL])
    assert code == 2 and "is empty: it gave no tokens" in capsys.readouterr().err
    (tmp_path / "docs.jsonl").write_text(json.dumps({"story": "Once upon a time"}) + "\n")
    code = cli_main(["harvest", "demo", "--dataset", str(tmp_path / "docs.jsonl"), "--text_column", "text",
                     "--out", str(tmp_path), *SMALL])
    assert code == 2 and "has no column 'text'; its columns are ['story']" in capsys.readouterr().err


def test_tokens_outside_the_vocabulary_are_refused(tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.full(100, 5000, dtype=np.int64))
    code = cli_main(["harvest", "demo", "--dataset", str(tmp_path / "big.npy"), "--out", str(tmp_path), *SMALL])
    assert code == 2 and "expected ids in [0, 2048)" in capsys.readouterr().err


def test_hf_target_from_a_local_folder_and_a_mismatched_tokenizer(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from autointerp.adapters.demo import demo_dir

    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(demo_dir() / "tokenizer.json"),
                                               eos_token="<|endoftext|>")

    def save(vocab: int, name: str):
        cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=vocab, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)

    save(2048, "good")
    code = cli_main(["harvest", f"hf:{tmp_path / 'good'}", "--layers", "transformer.h.1.mlp.act",
                     "--dataset", "demo", "--out", str(tmp_path / "out"), "--run_id", "hf", *SMALL])
    assert code == 0, capsys.readouterr().err
    result = load_harvest(tmp_path / "out" / "hf" / "harvest")
    assert len(result) == 64 and result.config.model["class"] == "GPT2LMHeadModel"
    assert result.config.model["layer_descriptions"]["transformer.h.1.mlp.act"].startswith(
        "MLP neurons (after the nonlinearity) in layer 1 of 2")

    code = cli_main(["harvest", f"hf:{tmp_path / 'good'}", "--out", str(tmp_path / "out"), *SMALL])
    assert code == 2 and "transformer.h.0.mlp.act" in capsys.readouterr().err  # no --layers: lists them

    save(100, "small_vocab")
    code = cli_main(["harvest", f"hf:{tmp_path / 'small_vocab'}", "--layers", "transformer.h.0.mlp.act",
                     "--dataset", "demo", "--out", str(tmp_path / "out"), *SMALL])
    assert code == 2
    assert "has 2048 tokens but the model's vocabulary has 100" in capsys.readouterr().err


def test_unrecognised_target(tmp_path, capsys):
    assert cli_main(["harvest", "no-such-thing", "--out", str(tmp_path)]) == 2
    assert "cannot tell what kind of target" in capsys.readouterr().err


def test_hf_model_that_cannot_be_loaded_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_such_model"  # not a folder, and not a valid hub name either
    assert cli_main(["harvest", f"hf:{missing}", "--layers", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "could not load the Hugging Face model" in err and "config.json" in err


# --------------------------------------------------------------------------- issue 12 item 7 (harvest half)

_MAKER = '''
from autointerp.adapters.demo import load_demo


def make(layers=None):
    model = load_demo(device="cpu")
    return model.harvest_fn(layers), model.tokenizer
'''


def _write_maker(folder, name="my_targets"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(_MAKER)
    return folder / f"{name}.py"


def test_module_function_target_resolves_from_the_current_directory(tmp_path, monkeypatch):
    from autointerp.adapters.targets import TargetRequest, load_target

    _write_maker(tmp_path / "proj", "cwd_only_targets")
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path / "proj"))])
    target = load_target(TargetRequest("cwd_only_targets:make"))
    assert callable(target.harvest_fn) and target.tokenizer is not None


def test_file_path_function_target(tmp_path, monkeypatch):
    from autointerp.adapters.targets import TargetRequest, kind_of, load_target

    path = _write_maker(tmp_path / "some where" / "deep", "file_targets")
    monkeypatch.chdir(tmp_path)
    spec = "some where/deep/file_targets.py:make"
    assert kind_of(spec).name == "function"
    assert callable(load_target(TargetRequest(spec)).harvest_fn)
    assert callable(load_target(TargetRequest(f"{path}:make")).harvest_fn)  # absolute too


def test_function_target_import_errors_say_what_was_tried(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["harvest", "no_such_module_xyz:make", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_module_xyz" in err and str(tmp_path) in err and "path/to/file.py:make" in err
    assert cli_main(["harvest", "missing/file.py:make", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing/file.py" in err and "no such file" in err
    _write_maker(tmp_path, "has_no_fn")
    assert cli_main(["harvest", "has_no_fn:nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "make" in err  # lists the functions it does have


def test_successful_harvest_removes_its_checkpoints_unless_asked_to_keep_them(tmp_path):
    args = ["harvest", "demo", "--out", str(tmp_path), "--layers", "blocks.0.mlp.act", "--checkpoint_every", "1",
            *SMALL]
    assert cli_main([*args, "--run_id", "gone"]) == 0
    assert (tmp_path / "gone" / "harvest" / "components.jsonl").exists()
    assert not list((tmp_path / "gone").rglob("*.pt"))
    assert cli_main([*args, "--run_id", "kept", "--keep_checkpoints"]) == 0
    assert [p.name for p in (tmp_path / "kept" / "checkpoints").glob("*.pt")] == ["harvest-rank0-of-1.pt"]
    # a kept checkpoint still extends the harvest
    assert cli_main([*args, "--run_id", "kept", "--resume", "--n_batches", "3"]) == 0


def test_worker_checkpoint_is_removed_once_its_worker_file_is_written(tmp_path):
    args = ["harvest", "demo", "--out", str(tmp_path), "--layers", "blocks.0.mlp.act", "--checkpoint_every", "1",
            "--run_id", "w", "--world_size", "2", *SMALL]
    assert cli_main([*args, "--rank", "0"]) == 0
    assert (tmp_path / "w" / "workers" / "rank0-of-2.pt").exists()
    assert not list((tmp_path / "w" / "checkpoints").rglob("*.pt"))
