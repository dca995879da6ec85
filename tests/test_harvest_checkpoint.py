"""The checkpoint format: a crafted ``.pt`` in a run folder never runs code on ``--resume`` or ``merge``,
and state that a safe load could not read back is refused when it is saved, not at the resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autointerp import HarvestLoop, TensorAccumulator
from autointerp.cli import main as cli_main
from autointerp.harvest_checkpoint import CHECKPOINT_FORMAT, accumulator_from_spec, read_checkpoint
from harvest_helpers import make_stream

SMALL = ["--n_batches", "1", "--batch_size", "2", "--context_length", "16", "--no_progress", "--device", "cpu",
         "--layers", "blocks.0.mlp.act"]


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what a hostile file in a shared folder would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def write_payload(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "loop": Payload(marker)}, path)


def test_the_payload_is_live_under_a_full_unpickle(tmp_path):
    # the control: without weights_only the file does run code, so the refusals below are real
    marker = tmp_path / "control"
    write_payload(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.read_text() == "ran"


def test_resume_refuses_a_pickle_payload_checkpoint(tmp_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "marker"
    write_payload(out / "r" / "checkpoints" / "harvest-rank0-of-1.pt", marker)
    assert cli_main(["harvest", "demo", "--out", str(out), "--run_id", "r", "--resume", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "is not an autointerp harvest checkpoint" in err and "could run code" in err
    assert not marker.exists()
    assert not (out / "r" / "harvest").exists()


def test_merge_refuses_a_pickle_payload_worker_file(tmp_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "marker"
    write_payload(out / "r" / "workers" / "rank0-of-1.pt", marker)
    assert cli_main(["merge", "r", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "rank0-of-1.pt is not an autointerp harvest checkpoint" in err and "could run code" in err
    assert not marker.exists()


def test_merge_builds_only_accumulator_classes(tmp_path, capsys):
    # plain values only, so a safe load reads it; but it names a callable that would run a command
    out, marker = tmp_path / "out", tmp_path / "marker"
    path = out / "r" / "workers" / "rank0-of-1.pt"
    path.parent.mkdir(parents=True)
    spec = {"class": "subprocess:call", "config": {"args": f"touch {marker}", "shell": True}}
    torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": {}, "done": True, "accumulators": [spec], "model": {},
                "dataset": {}, "token_strings": None, "loop": {}}, path)
    assert cli_main(["merge", "r", "--out", str(out)]) == 2
    assert "'subprocess:call' as an accumulator, but that is not an Accumulator subclass" in capsys.readouterr().err
    assert not marker.exists()
    with pytest.raises(ValueError, match="expected 'package.module:ClassName'"):
        accumulator_from_spec({"class": "no colon"})


def test_a_truncated_or_foreign_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt is not a readable harvest checkpoint"):
        read_checkpoint(tmp_path / "empty.pt")
    torch.save({"format": "something/else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected format autointerp.harvest_checkpoint/1, found 'something/else'"):
        read_checkpoint(tmp_path / "other.pt")


class SetStateAcc(TensorAccumulator):
    """A custom accumulator whose state holds a Python set: a safe load could not read it back."""

    name = "set_state"

    def setup(self, ctx):
        self.seen = torch.zeros(ctx.n_components, dtype=torch.int64, device=ctx.device)

    def update(self, batch):
        self.seen += batch.fires.sum(0)

    def state_dict(self):
        return {"seen": self.seen, "tags": {"a", "b"}}

    def finalize(self):
        return {}


def test_state_that_a_safe_load_cannot_read_is_refused_at_save(tmp_path):
    loop = HarvestLoop([SetStateAcc()], progress=False, vocab_size=13)
    loop.update(make_stream(0, 1, V=13)[0])
    with pytest.raises(TypeError, match=r"\['tags'\] is a set; a harvest checkpoint stores only tensors"):
        loop.save_checkpoint(tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()
