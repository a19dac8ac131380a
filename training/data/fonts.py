"""Fonts for synthetic pages and watermarks, split into disjoint training and evaluation families.

Training pages use DejaVu (ships with matplotlib too) and Liberation (fonts-liberation); evaluation pages use
GNU FreeFont (fonts-freefont-ttf) and Noto Sans/Serif (fonts-noto-core), so the document metrics measure
generalisation to typefaces the model never saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# IMGRESTORE_FONT_DIR (a folder laid out like /usr/share/fonts/truetype) is searched first: training/gpu.sh
# carries the training fonts to a machine without the Debian font packages.
FONT_DIRS = [Path(p) for p in [os.environ.get("IMGRESTORE_FONT_DIR")] if p] + [
    Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype")]


@dataclass(frozen=True)
class FontFamily:
    name: str
    regular: Path
    bold: Path
    italic: Path


def _family(name: str, folder: str, regular: str, bold: str, italic: str) -> FontFamily | None:
    for root in FONT_DIRS:
        paths = [root / folder / f for f in (regular, bold, italic)]
        if all(p.is_file() for p in paths):
            return FontFamily(name, *paths)
    return None


def _matplotlib_dejavu() -> list[FontFamily]:
    # matplotlib bundles DejaVu, so training works even without the Debian font packages.
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = []
    for name, stem in [("DejaVu Sans", "DejaVuSans"), ("DejaVu Serif", "DejaVuSerif"), ("DejaVu Sans Mono", "DejaVuSansMono")]:
        italic = "Oblique" if "Sans" in stem else "Italic"
        paths = [root / f"{stem}.ttf", root / f"{stem}-Bold.ttf", root / f"{stem}-{italic}.ttf"]
        if all(p.is_file() for p in paths):
            out.append(FontFamily(name, *paths))
    return out


TRAIN_SPECS = [
    ("DejaVu Sans", "dejavu", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"),
    ("DejaVu Serif", "dejavu", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf"),
    ("DejaVu Sans Mono", "dejavu", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf"),
    ("DejaVu Sans Condensed", "dejavu", "DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf",
     "DejaVuSansCondensed-Oblique.ttf"),
    ("DejaVu Serif Condensed", "dejavu", "DejaVuSerifCondensed.ttf", "DejaVuSerifCondensed-Bold.ttf",
     "DejaVuSerifCondensed-Italic.ttf"),
    ("Liberation Sans", "liberation", "LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf",
     "LiberationSans-Italic.ttf"),
    ("Liberation Serif", "liberation", "LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf",
     "LiberationSerif-Italic.ttf"),
    ("Liberation Mono", "liberation", "LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf",
     "LiberationMono-Italic.ttf"),
    ("Liberation Sans Narrow", "liberation", "LiberationSansNarrow-Regular.ttf", "LiberationSansNarrow-Bold.ttf",
     "LiberationSansNarrow-Italic.ttf"),
]

EVAL_SPECS = [
    ("FreeSans", "freefont", "FreeSans.ttf", "FreeSansBold.ttf", "FreeSansOblique.ttf"),
    ("FreeSerif", "freefont", "FreeSerif.ttf", "FreeSerifBold.ttf", "FreeSerifItalic.ttf"),
    ("Noto Sans", "noto", "NotoSans-Regular.ttf", "NotoSans-Bold.ttf", "NotoSans-Italic.ttf"),
    ("Noto Serif", "noto", "NotoSerif-Regular.ttf", "NotoSerif-Bold.ttf", "NotoSerif-Italic.ttf"),
]


# Typed pages of the "clean in" evaluation (evalsets.clean_in_pages): kept out of EVAL_SPECS so the dirty
# evaluation pages keep their draws. Training types with DejaVu Sans Mono and Liberation Mono.
EVAL_TYPEWRITER_SPECS = [
    ("FreeMono", "freefont", "FreeMono.ttf", "FreeMonoBold.ttf", "FreeMonoOblique.ttf"),
]


def training_fonts() -> list[FontFamily]:
    found = [f for spec in TRAIN_SPECS if (f := _family(*spec)) is not None]
    if not any(f.name.startswith("DejaVu") for f in found):
        found += _matplotlib_dejavu()
    if not found:
        raise RuntimeError("no training fonts found (install fonts-dejavu-core or matplotlib)")
    return found


def eval_fonts() -> list[FontFamily]:
    found = [f for spec in EVAL_SPECS if (f := _family(*spec)) is not None]
    if not found:
        raise RuntimeError("no evaluation fonts: apt-get install fonts-freefont-ttf fonts-noto-core")
    return found


def eval_typewriter_fonts() -> list[FontFamily]:
    found = [f for spec in EVAL_TYPEWRITER_SPECS if (f := _family(*spec)) is not None]
    if not found:
        raise RuntimeError("no evaluation typewriter font: apt-get install fonts-freefont-ttf")
    return found
