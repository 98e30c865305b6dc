import os

import pytest

from vlalign.errors import UserError
from vlalign.io import atomic_dir


def test_atomic_dir_appears_whole_with_the_usual_permissions(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not out.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "a.txt").read_text() == "a" and (out.stat().st_mode & 0o777) == 0o777 & ~umask


def test_atomic_dir_leaves_nothing_when_the_block_fails_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "old.txt").is_file()
    with pytest.raises(UserError, match="not empty"), atomic_dir(out):
        pass
