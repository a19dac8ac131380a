import numpy as np
import onnxruntime as ort
import pytest

from services.inference.tiling import TilePlan, axis_starts, blend_ramp, reflect_indices, run_tiled
from tests.support.onnx_models import build_model


def _session(cin: int, cout: int):
    return ort.InferenceSession(build_model(cin, cout, width=8, seed=3).SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _whole(session, image: np.ndarray, multiple: int) -> np.ndarray:
    """Reference: the whole image at once, reflect-padded to the model's multiple and cropped back."""
    h, w = image.shape[1:]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    padded = image[:, reflect_indices(0, ph, h)][:, :, reflect_indices(0, pw, w)]
    return session.run(None, {"input": padded[None]})[0][0][:, :h, :w]


def _tiled(session, image: np.ndarray, tile: int, overlap: int, multiple: int, batch: int = 3) -> np.ndarray:
    c, h, w = image.shape
    plan = TilePlan.for_image(h, w, tile, overlap, multiple)
    cout = session.run(None, {"input": image[None, :, :multiple, :multiple]})[0].shape[1]
    out = np.full((cout, h, w), np.nan, dtype=np.float32)
    seen = []

    def read(rows, cols):
        return image[:, rows][:, :, cols]

    def sink(first, rows):
        seen.append((first, rows.shape[1]))
        out[:, first:first + rows.shape[1]] = rows

    run_tiled(plan, read, lambda b: session.run(None, {"input": b})[0], sink, cout, batch)
    # Rows arrive in order, each exactly once, and cover the image.
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert sum(n for _, n in seen) == h and seen[0][0] == 0
    return out


@pytest.mark.parametrize("shape", [(1, 203, 317), (3, 130, 96), (1, 64, 64), (3, 17, 300)])
def test_tiled_output_matches_whole_image_without_seams(shape):
    rng = np.random.default_rng(1)
    image = rng.random(shape, dtype=np.float32)
    session = _session(shape[0], shape[0])
    whole = _whole(session, image, multiple=2)
    tiled = _tiled(session, image, tile=64, overlap=16, multiple=2)
    assert not np.isnan(tiled).any()
    assert np.abs(tiled - whole).max() < 1e-5


def test_without_overlap_the_seams_show():
    """The check above can fail: with no overlap, the tile borders differ from the whole-image result."""
    rng = np.random.default_rng(2)
    image = rng.random((1, 128, 128), dtype=np.float32)
    session = _session(1, 1)
    whole = _whole(session, image, multiple=2)
    tiled = _tiled(session, image, tile=64, overlap=0, multiple=2)
    assert np.abs(tiled - whole).max() > 1e-3


def test_ramps_of_neighbours_sum_to_one():
    tile, overlap = 64, 16
    left = blend_ramp(tile, overlap, ramp_start=False, ramp_end=True)
    right = blend_ramp(tile, overlap, ramp_start=True, ramp_end=False)
    shared = left[tile - overlap:] + right[:overlap]
    assert np.allclose(shared, 1.0)
    assert right[: overlap // 4].max() == 0.0  # the disturbed border pixels get no weight
    assert (left[: tile - overlap] == 1).all()


@pytest.mark.parametrize("length,tile,overlap,multiple", [(1, 64, 16, 8), (63, 64, 16, 8), (1000, 256, 32, 16),
                                                          (65535, 256, 32, 8), (257, 256, 32, 8)])
def test_tiles_cover_the_padded_axis_on_aligned_starts(length, tile, overlap, multiple):
    size, starts = axis_starts(length, tile, overlap, multiple)
    padded = -(-length // multiple) * multiple
    assert size % multiple == 0 and size <= max(tile, multiple)
    assert starts[0] == 0 and starts[-1] + size == padded
    assert all(s % multiple == 0 for s in starts)
    assert all(b - a <= size - overlap or len(starts) == 1 for a, b in zip(starts, starts[1:]))


def test_reflect_indices_mirror_without_repeating_the_edge():
    assert reflect_indices(0, 6, 4).tolist() == [0, 1, 2, 3, 2, 1]
    assert reflect_indices(0, 4, 1).tolist() == [0, 0, 0, 0]
    assert reflect_indices(0, 10, 3).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0, 1]


def test_working_memory_does_not_grow_with_image_height():
    """The strip handed to the sink is never taller than a tile, whatever the image height."""
    tallest = []
    for height in (300, 3000):
        plan = TilePlan.for_image(height, 64, 64, 16, 2)
        rows_seen = []
        run_tiled(plan, lambda r, c: np.zeros((1, len(r), len(c)), np.float32), lambda b: b,
                  lambda first, rows: rows_seen.append(rows.shape[1]), 1, 4)
        tallest.append(max(rows_seen))
    assert tallest[0] == tallest[1] <= 64
