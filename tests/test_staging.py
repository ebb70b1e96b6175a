"""robolake/staging.py: a file or folder is replaced whole, or not at all."""

import os

import pytest

from robolake.staging import staged, write_atomic


def test_a_file_is_replaced_in_one_step(tmp_path):
    path = tmp_path / "sub" / "pointer.json"
    write_atomic(str(path), b"old")
    write_atomic(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["pointer.json"]


def test_a_folder_is_replaced_whole_and_nothing_is_left_beside_it(tmp_path):
    target = tmp_path / "best"
    for content in ("first", "second"):
        with staged(str(target)) as staging:
            os.makedirs(staging)
            (tmp_path / os.path.basename(staging) / "weights").write_text(content)
    assert (target / "weights").read_text() == "second"
    assert os.listdir(tmp_path) == ["best"]


def test_an_error_while_writing_keeps_the_old_folder(tmp_path):
    target = tmp_path / "last"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with staged(str(target)) as staging:
            os.makedirs(staging)
            raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "old"
    assert os.listdir(tmp_path) == ["last"]


def test_a_swap_killed_between_its_renames_is_undone_by_the_next_one(tmp_path):
    # the old folder set aside, the new one not yet moved in: what a SIGKILL there leaves
    aside = tmp_path / ".last.0123456789ab.replaced"
    aside.mkdir()
    (aside / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with staged(str(tmp_path / "last")):
            assert (tmp_path / "last" / "weights").read_text() == "old"
            raise RuntimeError("stop before writing")
    assert (tmp_path / "last" / "weights").read_text() == "old"
    assert os.listdir(tmp_path) == ["last"]
