"""Atomic writes: the new file in place, nothing left behind, the permissions open() would give."""

import os
import stat

from wmsim.files import atomic_write_bytes, atomic_write_json


def test_an_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert path.read_text() == '{\n  "x": 2\n}\n'
    assert os.listdir(tmp_path) == ["a.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    atomic_write_bytes(tmp_path / "atomic", b"x")
    (tmp_path / "plain").write_bytes(b"x")
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("atomic") == mode("plain")
