"""A finished job's freed memory goes back to the system (glibc keeps it in its heaps otherwise)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services import restorer as restorer_module
from services.config import Settings
from services.errors import ImgRestoreError
from services.inference.registry import ModelRegistry
from services.jobs import Job
from services.memory import release_free_memory
from services.restorer import Restorer

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@glibc_only
def test_freed_heap_blocks_go_back_to_the_system():
    # 60 kB blocks sit in the heap (under glibc's mmap threshold); the last one pins the heap's top, so glibc's own
    # trimming at free() cannot give back the 170 MiB below it.
    blocks = [b"x" * 60_000 for _ in range(3000)]
    pinned = blocks[-1]
    del blocks
    before = rss_mib()
    assert release_free_memory()
    assert rss_mib() < before - 100, "the freed blocks stayed in the process"
    assert pinned[:1] == b"x"


class CountingRelease:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


@pytest.fixture
def counted(monkeypatch) -> CountingRelease:
    counter = CountingRelease()
    monkeypatch.setattr(restorer_module, "release_free_memory", counter)
    return counter


def test_every_job_releases_its_memory_whether_it_succeeds_or_fails(tiny_model_dir, tmp_path, counted):
    restorer = Restorer(Settings(model_dir=tiny_model_dir), registry=ModelRegistry(tiny_model_dir, intra_op_threads=1))
    good = tmp_path / "in.png"
    Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(good)
    restorer.restore(Job(task="watermark", input_url=str(good), output_url=str(tmp_path / "out.png")))
    assert counted.calls == 1 and (tmp_path / "out.png").is_file()

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImgRestoreError):
        restorer.restore(Job(task="watermark", input_url=str(bad), output_url=str(tmp_path / "bad-out.png")))
    assert counted.calls == 2
