import os

import pytest

from services.errors import InputNotFoundError, UnsupportedURLError
from services.storage import LocalStorage, local_path, matches_any


def test_local_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    storage = LocalStorage()
    target = tmp_path / "deep" / "out.png"
    storage.write(str(target), b"first")
    assert target.read_bytes() == b"first"

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        storage.write(str(target), b"second, never complete")
    assert target.read_bytes() == b"first"  # readers never saw a half-written file
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_file_urls_and_errors(tmp_path):
    (tmp_path / "a b.png").write_bytes(b"x")
    assert LocalStorage().read(f"file://{tmp_path}/a%20b.png") == b"x"
    assert local_path("file:///x/y.png").as_posix() == "/x/y.png"
    with pytest.raises(UnsupportedURLError, match="gs"):
        local_path("gs://bucket/key")
    with pytest.raises(UnsupportedURLError):
        local_path("file://otherhost/x.png")
    with pytest.raises(InputNotFoundError, match="no such file"):
        LocalStorage().read(str(tmp_path / "missing.png"))


def test_listing_is_recursive_sorted_and_skips_hidden(tmp_path):
    for name in ("b.png", "a/c.jpg", ".hidden.png", "a/.part"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    urls = [o.url for o in LocalStorage().list(str(tmp_path))]
    assert urls == [str(tmp_path / "b.png"), str(tmp_path / "a" / "c.jpg")]
    assert matches_any("s3://b/x/Y.PNG", ["*.png", "*.jpg"]) and not matches_any("x.tif", ["*.png"])
