"""Where results go and what listings take as inputs: one naming rule and one suffix list for run, batches,
backfills and watch; a listing never takes the service's own outputs (its output folder, or the
``restored/<variant>/`` folders of default outputs) as inputs (issue 10, bugs 4 and 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.backfill import BackfillPlan
from services.cli.run import WorkItem, expand_inputs
from services.jobs import DEFAULT_INCLUDE, JobOptions, Profile, Task, derive_output_url
from services.queue.batch_store import Batch
from services.queue.submission import is_earlier_output, output_for, request_id
from services.storage import StorageRouter, matches_any


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture()
def scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``./scans`` with two inputs, an earlier backfill's results in ``clean/`` and an earlier default output."""
    monkeypatch.chdir(tmp_path)
    for name in ("a.png", "sub/b.gif", "clean/a.png", "restored/colorize/a.png", "sub/restored/denoise-auto/b.png"):
        _touch(tmp_path / "scans" / name)
    return tmp_path / "scans"


def _listed(plan: BackfillPlan, settings) -> list[str]:
    return sorted(Path(info.url).relative_to("scans").as_posix() for info in plan.inputs(StorageRouter(settings)))


def test_embedded_backfill_skips_its_own_output_given_as_a_dot_relative_path(scans, settings) -> None:
    """Bug 4: ``--output ./scans/clean`` over ``./scans`` took scans/clean/*.png as inputs (string prefix
    ``./scans/clean/`` against listed paths ``scans/clean/...``)."""
    plan = BackfillPlan(task=Task.denoise, source="./scans", output="./scans/clean")

    assert _listed(plan, settings) == ["a.png", "sub/b.gif"]


def test_backfill_outputs_keep_their_folders_under_a_dot_relative_output(scans) -> None:
    plan = BackfillPlan(task=Task.denoise, source="./scans", output="./out")

    assert output_for(plan.batch(), "scans/sub/b.gif", plan.root) == "./out/sub/b.png"


def test_listings_skip_earlier_default_outputs_under_the_source(scans, settings) -> None:
    """Bug 7: a backfill over a folder that an earlier job wrote default outputs into (``restored/<variant>/``)
    restored those outputs again (a colorized image then got denoised)."""
    plan = BackfillPlan(task=Task.denoise, source="scans", output="elsewhere")
    assert _listed(plan, settings) == ["a.png", "clean/a.png", "sub/b.gif"]

    items = expand_inputs(["scans"], "elsewhere", StorageRouter(settings))
    assert sorted(item.relative for item in items) == ["a.png", "clean/a.png", "sub/b.gif"]


def test_a_prefix_batch_skips_earlier_default_outputs_even_with_an_output_prefix() -> None:
    batch = Batch(task=Task.denoise, source="s3://b/scans/", output_prefix="s3://b/out/")
    root = "s3://b/scans/"

    assert is_earlier_output(batch, "s3://b/scans/restored/colorize/p1.png", root)
    assert is_earlier_output(batch, "s3://b/out/p1.png", root)
    assert not is_earlier_output(batch, "s3://b/scans/p1.png", root)
    assert not is_earlier_output(batch, "s3://b/scans/restored/p1.png", root)  # a user's folder named 'restored'
    assert not is_earlier_output(batch, "s3://b/scans/restored/colorize/p1.png", "s3://b/scans/restored/colorize/")


@pytest.mark.parametrize("name", ["old.gif", "letter.pdf", "scan.tiff", "photo.JPG"])
def test_batches_and_backfills_take_every_input_that_run_restores(name) -> None:
    """One suffix list: ``run`` restored .gif (and .pdf) inputs that a backfill's default include skipped."""
    assert matches_any(f"s3://b/scans/{name}", DEFAULT_INCLUDE)


@pytest.mark.parametrize("fmt", [None, "jpeg"])
def test_one_naming_rule_for_run_batches_and_the_default(fmt) -> None:
    batch = Batch(task=Task.colorize, output_prefix="s3://b/out", options=JobOptions(output_format=fmt))
    via_batch = output_for(batch, "s3://b/scans/sub/old.gif", "s3://b/scans/")
    via_run = WorkItem("s3://b/scans/sub/old.gif", "sub/old.gif").output_url("s3://b/out", batch.options.output_format)
    default = derive_output_url("s3://b/scans/sub/old.gif", Task.colorize, output_format=fmt)

    expected = "old.jpg" if fmt else "old.png"
    assert via_batch == via_run == f"s3://b/out/sub/{expected}"
    assert default == f"s3://b/scans/sub/restored/colorize/{expected}"


def test_backfill_and_watch_ids_stay_the_same_under_the_wider_default_include() -> None:
    """The default include gained .gif and .pdf; a backfill or watch started before must still be found by id."""
    before = ["*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.webp", "*.bmp"]
    args = (Task.denoise, Profile.auto, "s3://b/scans/", "s3://b/out/")
    assert request_id("bf", *args, DEFAULT_INCLUDE, JobOptions()) == request_id("bf", *args, before, JobOptions())
    assert request_id("bf", *args, ["*.png"], JobOptions()) != request_id("bf", *args, before, JobOptions())
