"""No evaluation image is a training source — and the check itself catches copies."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from training.data.isolation import find_leaks
from training.data.sources import EVAL_SKIMAGE, EVAL_SKLEARN, eval_photo_paths, training_photo_sources


def test_eval_set_is_the_issue_list():
    assert set(eval_photo_paths()) == {"china", "flower", "astronaut", "coffee", "chelsea", "rocket"}
    assert all(p.is_file() for p in eval_photo_paths().values())


def test_no_training_source_is_an_eval_image():
    sources = training_photo_sources()
    assert len(sources) >= 10
    names = {s.path.name for s in sources}
    assert names.isdisjoint(set(EVAL_SKIMAGE) | set(EVAL_SKLEARN))
    leaks = find_leaks([s.path for s in sources], eval_photo_paths())
    assert leaks == []


def test_leak_check_catches_exact_and_resized_copies(tmp_path: Path):
    ev = eval_photo_paths()
    copy = tmp_path / "resized-chelsea.jpg"
    with Image.open(ev["chelsea"]) as im:
        im.convert("RGB").resize((im.size[0] // 2, im.size[1] // 2)).save(copy, quality=70)
    leaks = find_leaks([ev["coffee"], copy], ev)
    assert {(leak.eval_name, leak.reason.split()[0]) for leak in leaks} == {("coffee", "identical"), ("chelsea", "thumbnail")}


def test_no_evaluation_font_is_a_training_font():
    """Including the typed pages' FreeMono of the clean-in document set (training types in DejaVu/Liberation Mono)."""
    from training.data.fonts import eval_fonts, eval_typewriter_fonts, training_fonts

    train = {p.name for f in training_fonts() for p in (f.regular, f.bold, f.italic)}
    evaluation = {p.name for f in eval_fonts() + eval_typewriter_fonts() for p in (f.regular, f.bold, f.italic)}
    assert train.isdisjoint(evaluation)
    assert not any("Free" in n or "Noto" in n for n in train)
