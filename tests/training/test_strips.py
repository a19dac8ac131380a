"""Before/after strips (training/strips.py): the right examples, the model's output in the middle column."""

import numpy as np
import pytest
from PIL import Image

from training.strips import LABEL_BAND, TILE, examples, write_strip


@pytest.mark.parametrize("name", ["doc-denoise", "photo-denoise", "watermark", "colorize"])
def test_examples_are_tiles_of_eval_images(name):
    found = examples(name)
    assert len(found) == 2
    for caption, inp, ref in found:
        assert caption
        assert inp.shape[:2] == ref.shape[:2] == (TILE, TILE)
        if name == "colorize":
            assert inp.ndim == 2 and ref.shape[2] == 3  # gray in, colour reference


def test_doc_strip_shows_the_dirty_input_and_a_clean_page_kept_as_it_is():
    (_, dirty, clean), (_, clean_in, same) = examples("doc-denoise")
    assert np.abs(dirty - clean).mean() > 0.02  # a page that needs cleaning
    assert np.array_equal(clean_in, same)  # the do-no-harm example: input is the reference
    assert (clean_in < 0.5).mean() > 0.05  # and the window holds text, not margin


def test_the_middle_column_is_the_models_output(tmp_path):
    path = write_strip("photo-denoise", lambda img: np.zeros_like(img), tmp_path)
    strip = np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)
    middle = strip[LABEL_BAND:LABEL_BAND + TILE, TILE + 4:2 * TILE + 4]
    left = strip[LABEL_BAND:LABEL_BAND + TILE, :TILE]
    assert middle.max() <= 8  # black (JPEG leaves a few levels) where the model returned zeros
    assert left.mean() > 40  # the noisy photo beside it
