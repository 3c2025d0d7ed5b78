"""The one atomic-write helper: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import json
import os

import pytest

from monai_smalldet.files import TEMPORARY_GLOB, atomic_write, remove_temporaries, write_json_atomic
from monai_smalldet.networks import NetworkSpec, build_network, load_checkpoint, save_checkpoint


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_json_atomic(tmp_path / "sub" / "result.json", {"a": 1})
    assert target.read_text() == '{\n "a": 1\n}\n'

    def half_then_fail(tmp):
        tmp.write_text('{"a": ')  # half of the new content ...
        raise OSError("disk full")  # ... then the writer dies

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert json.loads(target.read_text()) == {"a": 1}
    assert list(target.parent.glob(TEMPORARY_GLOB)) == []
    with pytest.raises(TypeError):  # not JSON-serialisable: nothing written, nothing left
        write_json_atomic(tmp_path / "sub" / "other.json", {"a": object()})
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_the_temporary_is_beside_the_target_with_the_writers_suffix(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"png")

    atomic_write(tmp_path / "overlay.png", write, suffix=".png")
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".overlay.png.") and tmp.suffix == ".png"
    assert (tmp_path / "overlay.png").read_bytes() == b"png" and not tmp.exists()


def test_a_killed_writers_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / f".a.json.{os.getpid()}.0123.tmp").write_text("{")
    (tmp_path / ".b.png.1.2.tmp.png").write_bytes(b"")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / ".hidden").write_text("keep")
    assert remove_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "a.json"]
    assert remove_temporaries(tmp_path / "missing") == 0


def test_checkpoints_are_written_through_it(tmp_path):
    spec = NetworkSpec(tile_size_px=128, operating_point={"score_threshold": 0.2, "target_fpi": 0.3})
    path = save_checkpoint(tmp_path / "model.pt", build_network("n"), spec)
    _, loaded = load_checkpoint(path)
    assert loaded.operating_point["score_threshold"] == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]
