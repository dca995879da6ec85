"""Exports for other apps: the documented jsonl and Neuronpedia-shaped layouts."""

from __future__ import annotations

import json

import pytest
from report_fixture import DEAD, INJECT_SCRIPT, N_COMPONENTS, make_harvest, make_run

from autointerp.cli import main
from autointerp.report import export_run
from autointerp.report import RunData


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"))


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_layout(run):
    path = export_run(run, "jsonl", top_examples=2)
    assert path == run.root / "export" / "components.jsonl"
    recs = _lines(path)
    assert [r["key"] for r in recs] == make_harvest().keys()
    by_key = {r["key"]: r for r in recs}
    r = by_key["h.0.mlp:1"]
    assert r["format"] == "autointerp.export/1" and r["run"] == run.run_id
    assert r["label"] == "em dash — and café" and r["confidence"] == "medium" and r["explainer_model"] == "offline"
    assert r["scores"]["detection"] == {"label": 0.55, "shuffled": 0.5, "token_lookup": 0.55, "n_trials": 20, "metrics": {"precision": 0.7}}
    assert len(r["top_examples"]) == 2
    ex = r["top_examples"][0]
    assert set(ex) == {
        "token_ids", "tokens", "text_tokens", "text", "activations", "firing_offset", "firing_activation", "sequence_index", "position",
    }
    assert ex["text"] == "".join(ex["text_tokens"])
    assert ex["firing_activation"] == ex["activations"][ex["firing_offset"]] > 0
    assert len(ex["tokens"]) == len(ex["token_ids"]) == len(ex["activations"])
    assert by_key["h.1.mlp:0"]["scores"]["intruder"] == {"none": 0.75, "n_trials": 10, "metrics": {}}
    assert by_key[DEAD]["label"] is None and by_key[DEAD]["top_examples"] == [] and by_key[DEAD]["scores"] == {}
    assert by_key["h.0.mlp:0"]["label"].endswith(INJECT_SCRIPT)  # exported as data, unescaped
    info = json.loads((path.parent / "run.json").read_text())
    assert info["n_components"] == N_COMPONENTS and info["n_labeled"] == N_COMPONENTS - 2
    assert info["score_means"]["detection"]["shuffled"]["mean"] == 0.5


def test_jsonl_joins_utf8(run):
    recs = {r["key"]: r for r in _lines(export_run(run, "jsonl"))}
    texts = [e["text"] for e in recs["h.0.mlp:1"]["top_examples"]]
    assert any("—" in t or "é" in t for t in texts)
    assert not any("â" in t or "Ã" in t for t in texts)


def test_neuronpedia_layout(run):
    path = export_run(run, "neuronpedia", top_examples=3, model_id="toy-model")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert path.name == "neuronpedia.json"
    assert doc["format"] == "autointerp.neuronpedia/1" and doc["modelId"] == "toy-model"
    assert len(doc["features"]) == N_COMPONENTS
    f = next(f for f in doc["features"] if f["autointerpKey"] == "h.0.mlp:1")
    assert f["layer"] == "h.0.mlp" and f["index"] == "1" and f["modelId"] == "toy-model"
    (e,) = f["explanations"]
    assert e["description"] == "em dash — and café"
    assert e["scores"] == [{"explanationScoreTypeName": "detection", "value": 0.55}]
    act = f["activations"][0]
    assert len(act["tokens"]) == len(act["values"])
    assert act["values"][act["maxValueTokenIndex"]] == act["maxValue"]
    dead = next(f for f in doc["features"] if f["autointerpKey"] == DEAD)
    assert dead["explanations"] == [] and dead["activations"] == []


def test_export_from_run_data_needs_output(run, tmp_path):
    data = RunData.from_run(run)
    with pytest.raises(ValueError, match="pass output"):
        export_run(data)
    out = export_run(data, "jsonl", tmp_path / "x.jsonl")
    assert len(_lines(out)) == N_COMPONENTS


def test_bad_arguments(run):
    with pytest.raises(ValueError, match="export format"):
        export_run(run, "csv")
    with pytest.raises(ValueError, match="top_examples"):
        export_run(run, top_examples=-1)


def test_cli_export(run, capsys, tmp_path):
    out = tmp_path / "np.json"
    assert main(["export", run.run_id, "--out", str(run.root.parent), "--format", "neuronpedia", "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    assert len(json.loads(out.read_text())["features"]) == N_COMPONENTS
    assert main(["export", run.run_id, "--out", str(run.root.parent)]) == 0
    assert capsys.readouterr().out.strip().endswith("export/components.jsonl")
    assert main(["export", "missing", "--out", str(tmp_path)]) == 2


def test_neuronpedia_file_is_written_a_feature_at_a_time_and_equals_the_document(run, monkeypatch):
    """`export_run` streams the Neuronpedia document (one component in memory at a time); the file
    holds exactly the document `neuronpedia_document` builds in memory, with and without orjson."""
    from autointerp.report import export as export_mod
    from autointerp.report import numbers

    want = export_mod.neuronpedia_document(RunData.from_run(run), top_examples=3, model_id="m")
    seen = []
    real = export_mod._feature
    monkeypatch.setattr(export_mod, "neuronpedia_document", None)  # the writer must not build the document
    monkeypatch.setattr(export_mod, "_feature", lambda rec, mid: seen.append(rec["key"]) or real(rec, mid))
    path = export_run(run, "neuronpedia", top_examples=3, model_id="m")
    assert json.loads(path.read_text(encoding="utf-8")) == want and len(seen) == N_COMPONENTS
    monkeypatch.setattr(numbers, "_orjson", None)
    assert json.loads(export_run(run, "neuronpedia", top_examples=3, model_id="m").read_text(encoding="utf-8")) == want


@pytest.mark.parametrize("fmt", ["jsonl", "neuronpedia"])
def test_workers_write_the_same_bytes(run, tmp_path, fmt, monkeypatch):
    """`export_run(workers=N)` makes the records in N processes, each reading its own lines through the
    harvest's index, in chunks (3 components here, so the run is several)."""
    from autointerp.report import export as export_mod

    monkeypatch.setattr(export_mod, "CHUNK_SIZE", 3)
    one = export_run(run, fmt, tmp_path / "one", top_examples=3)
    many = export_run(run, fmt, tmp_path / "many", top_examples=3, workers=2)
    assert many.read_bytes() == one.read_bytes()
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        export_run(run, fmt, tmp_path / "x", workers=0)
