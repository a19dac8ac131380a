"""Issue 13, item 6: colour pages through the gray document model (the shipped doc-denoise) keep their stamps,
coloured ink and highlighter; pages without meaningful colour still come out as compact gray images."""

from __future__ import annotations

import io
from typing import get_args

import numpy as np
import pytest
from PIL import Image, ImageDraw

from services.config import DocumentColourName, Settings
from services.jobs import DocumentColour, Job, JobOptions, Profile, Task
from services.queue.submission import request_id
from services.restorer import Restorer

PAPER = (242, 236, 222)  # aged, yellowish paper
STAMP = (200, 30, 35)
HIGHLIGHTER = (250, 235, 60)
STAMP_RING = np.s_[636:644, 381:387]  # the stamp's circle, left edge
HIGHLIGHT = np.s_[202:213, 300:328]  # highlighter past the end of the text it marks
BLANK = np.s_[740:780, 20:580]


def _form(seed: int = 0, colour: bool = True) -> np.ndarray:
    """A scanned form: typed lines on tinted paper, one line highlighted, a round red stamp; scanner noise."""
    image = Image.new("RGB", (600, 800), PAPER)
    draw = ImageDraw.Draw(image)
    for y in range(60, 700, 28):
        draw.text((50, y), f"Invoice line item {y}  amount 1234.56 paid", fill=(25, 25, 30))
    if colour:
        draw.rectangle((48, 200, 330, 214), fill=HIGHLIGHTER)
        draw.text((50, 200), "Highlighted text under the marker", fill=(25, 25, 30))
        draw.ellipse((380, 560, 540, 720), outline=STAMP, width=8)
        draw.text((420, 630), "APPROVED", fill=STAMP)
    noisy = np.asarray(image).astype(np.float32) + np.random.default_rng(seed).normal(0, 6, (800, 600, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer(Settings(tile_batch_size=2))  # the shipped models


def _restore(restorer: Restorer, pixels: np.ndarray, color: DocumentColour | None = None) -> np.ndarray:
    job = Job(task=Task.denoise, profile=Profile.document, input_url="file:///in.png", output_url="file:///out.png",
              options=JobOptions(color=color))
    output, model, _ = restorer.infer(job, pixels)
    assert model.spec.input.channels == 1  # the document model is gray: the colour comes from the input
    return output.pixels


def _mean(pixels: np.ndarray, region) -> np.ndarray:
    return pixels[region].reshape(-1, pixels.shape[2]).astype(np.float32).mean(axis=0)


def test_stamp_stays_red_highlighter_yellow_and_paper_turns_white(restorer):
    out = _restore(restorer, _form())  # default: auto
    assert out.shape == (800, 600, 3) and out.dtype == np.uint8  # before: (800, 600, 1), the stamp black
    red, green, blue = _mean(out, STAMP_RING)
    assert red > 150 and red - max(green, blue) > 100, (red, green, blue)
    red, green, blue = _mean(out, HIGHLIGHT)
    assert min(red, green) > 220 and min(red, green) - blue > 100, (red, green, blue)
    paper = _mean(out, BLANK)
    assert paper.min() > 245 and paper.max() - paper.min() < 3, paper  # white: the yellow tint is gone, not kept


def test_a_gray_scan_in_colour_comes_out_gray_and_compact(restorer, tmp_path):
    page = _form(colour=False)  # tinted paper and black ink only, as a scanner in colour mode sends it
    out = _restore(restorer, page)
    assert out.shape == (800, 600, 1)
    assert _mean(out, BLANK)[0] > 245

    data = io.BytesIO()
    Image.fromarray(page).save(data, "PNG")
    (tmp_path / "in.png").write_bytes(data.getvalue())
    job = Job(task=Task.denoise, profile=Profile.document, input_url=(tmp_path / "in.png").as_uri(),
              output_url=(tmp_path / "out.png").as_uri())
    outcome = restorer.restore(job)
    assert outcome.result.mode in ("L", "1")  # one channel: a third of the colour page's pixels
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode in ("L", "1")


def test_keep_and_gray_override_the_detection(restorer):
    assert _restore(restorer, _form(), DocumentColour.gray).shape[2] == 1  # the behaviour before, on request
    kept = _restore(restorer, _form(colour=False), DocumentColour.keep)
    assert kept.shape[2] == 3
    paper = _mean(kept, BLANK)
    assert paper.max() - paper.min() < 3, paper  # colour kept, the paper's tint still removed


def test_the_setting_is_the_default_and_the_job_option_wins():
    gray = Restorer(Settings(tile_batch_size=2, document_color="gray"))
    assert _restore(gray, _form()).shape[2] == 1
    assert _restore(gray, _form(), DocumentColour.auto).shape[2] == 3


def test_request_ids_of_earlier_backfills_and_watches_are_unchanged():
    # Computed by the code before the colour option existed: --resume and watch state files must still find them.
    options = JobOptions(jpeg_quality=90)
    assert request_id("bf", Task.denoise, Profile.document, "s3://scans/2019/", "s3://clean/2019/", ["*.png"],
                      options) == "bf-ac00fe59ffd36fe2"
    coloured = options.model_copy(update={"color": DocumentColour.keep})
    assert request_id("bf", Task.denoise, Profile.document, "s3://scans/2019/", "s3://clean/2019/", ["*.png"],
                      coloured) != "bf-ac00fe59ffd36fe2"  # another request: another backfill


def test_the_settings_and_the_cli_offer_the_same_modes_as_jobs():
    assert set(get_args(DocumentColourName)) == {mode.value for mode in DocumentColour}
