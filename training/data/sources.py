"""Offline photo sources for training, and the held-out evaluation photos.

Training photos come only from files that installed packages ship (nothing is downloaded):
scikit-image's bundled images minus the evaluation ones, matplotlib's sample data, and Debian wallpaper /
background packages (gnome-backgrounds, mate-backgrounds, plasma-workspace-wallpapers, ukui-wallpapers,
desktop-base). Evaluation photos are scikit-learn's ``china``/``flower`` and scikit-image's ``astronaut``,
``coffee``, ``chelsea`` and ``rocket``; they are excluded by name here and by content in the tests.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .photo_packages import has_colour, is_package_photo, package_files, package_photo_paths

EVAL_SKIMAGE = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
EVAL_SKLEARN = ("china.jpg", "flower.jpg")
# Bundled images that are not natural photographs (binary masks, charts, tiny logos) or are grayscale.
SKIMAGE_SKIP = {"horse.png", "chessboard_GRAY.png", "chessboard_RGB.png", "phantom.png", "logo.png",
                "no_time_for_that_tiny.gif", "clock_motion.png", "microaneurysms.png", "text.png", "page.png"}
WALLPAPER_DIRS = [Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"), Path("/usr/share/desktop-base")]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MIN_SIDE = 256
MAX_SIDE = 768  # sources are downscaled to this: cleaner pixels (less sensor noise/JPEG), faster crops


@dataclass(frozen=True)
class PhotoSource:
    path: Path
    origin: str  # "skimage" | "matplotlib" | "wallpaper"


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _sklearn_dir() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


def eval_photo_paths() -> dict[str, Path]:
    """name -> file of every evaluation photo."""
    out = {Path(n).stem: _sklearn_dir() / n for n in EVAL_SKLEARN}
    out.update({Path(n).stem: _skimage_dir() / n for n in EVAL_SKIMAGE})
    return out


def load_eval_photos() -> dict[str, np.ndarray]:
    """name -> uint8 RGB array."""
    return {name: np.asarray(Image.open(p).convert("RGB")) for name, p in eval_photo_paths().items()}


# A folder of training photos packed elsewhere (training/gpu.sh: the GPU machine has no Debian wallpaper packages);
# when set, it replaces every other source. Paths inside keep the original's tail (e.g. mate/nature/x.jpg), so
# is_natural_photo still recognises them.
PHOTO_PACK_ENV = "IMGRESTORE_PHOTO_PACK"


def packed_photo_sources(root: Path) -> list[PhotoSource]:
    return [PhotoSource(p, "pack") for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def training_photo_sources() -> list[PhotoSource]:
    if os.environ.get(PHOTO_PACK_ENV):
        return packed_photo_sources(Path(os.environ[PHOTO_PACK_ENV]))
    excluded = set(EVAL_SKIMAGE) | set(EVAL_SKLEARN)
    found: list[PhotoSource] = []
    for p in sorted(_skimage_dir().iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in excluded and p.name not in SKIMAGE_SKIP:
            found.append(PhotoSource(p, "skimage"))
    import matplotlib

    mpl = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if mpl.is_file():
        found.append(PhotoSource(mpl, "matplotlib"))
    in_packages = package_files()  # photo packages' files: listed below, and only for configs that ask for them
    for root in WALLPAPER_DIRS:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if (p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and "screenshot" not in p.name
                    and "logo" not in str(p) and p.name not in excluded and p not in in_packages):
                found.append(PhotoSource(p, "wallpaper"))
    found += [PhotoSource(p, "photo-package") for _, p in package_photo_paths() if p.name not in excluded]
    return found


# Photographs of natural scenes among the sources (the rest are mostly abstract or illustrated wallpapers).
# Colorization trains on these only: on all sources it learned wallpaper colours (purple trees, yellow sky).
NATURAL_PHOTOS = (
    "motorcycle_left.png", "motorcycle_right.png", "grace_hopper.jpg",
    "mate/nature/",
    "wallpapers/Autumn/", "wallpapers/BytheWater/", "wallpapers/ColdRipple/", "wallpapers/ColorfulCups/",
    "wallpapers/DarkestHour/", "wallpapers/EveningGlow/", "wallpapers/FallenLeaf/", "wallpapers/Grey/",
    "wallpapers/Kite/", "wallpapers/OneStandsOut/", "wallpapers/Path/", "wallpapers/summer_1am/",
)


def is_natural_photo(path: Path) -> bool:
    text = str(path)
    return any(key in text for key in NATURAL_PHOTOS)


def _load_rgb(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (MAX_SIDE * 2, MAX_SIDE * 2))  # JPEG: decode at reduced size, much faster
            im = im.convert("RGB")
            if min(im.size) < MIN_SIDE:
                return None
            scale = MAX_SIDE / max(im.size)
            if scale < 1:
                im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.Resampling.LANCZOS)
            return np.asarray(im)
    except (OSError, ValueError):
        return None


def _is_colourful(img: np.ndarray) -> bool:
    # Flat or gray images teach neither colour nor texture; drop nearly uniform ones too.
    f = img.astype(np.float32)
    return float(f.std()) > 12.0


def load_training_photos(cache_dir: Path | None = None, natural_only: bool = False,
                         photo_packages: bool = False) -> list[np.ndarray]:
    """All usable training photos (or only the natural ones) as uint8 RGB arrays (max side 768), cached as a
    pickle keyed by the file list. ``photo_packages``: include the photographs of ``data/photo_packages.py``
    (all natural; B&W/sepia ones dropped); off by default so existing configs keep their exact photo sets."""
    sources = training_photo_sources()
    if not photo_packages:
        sources = [s for s in sources if not is_package_photo(s.path)]
    if natural_only:
        sources = [s for s in sources if is_natural_photo(s.path) or is_package_photo(s.path)]
    key = hashlib.sha256("\n".join(f"{s.path}:{s.path.stat().st_size}" for s in sources).encode()).hexdigest()[:16]
    cache = (cache_dir / f"photos-{key}.pkl") if cache_dir else None
    if cache is not None and cache.is_file():
        with cache.open("rb") as fh:
            return pickle.load(fh)
    images = []
    seen: set[str] = set()
    for s in sources:
        img = _load_rgb(s.path)
        if img is None or not _is_colourful(img) or (is_package_photo(s.path) and not has_colour(img)):
            continue
        digest = hashlib.sha256(img[::8, ::8].tobytes()).hexdigest()
        if digest in seen:  # the same wallpaper in several resolutions
            continue
        seen.add(digest)
        images.append(img)
    if not images:
        raise RuntimeError("no training photos found: install scikit-image / Debian wallpaper packages")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as fh:
            pickle.dump(images, fh)
    return images
