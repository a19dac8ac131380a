"""Debian packages that ship real photographs: more natural photos for colorization (issue 9, item 7).

Every package below was downloaded and inspected file by file (``apt-get download`` + ``dpkg -c`` + contact
sheets); only photographs of real scenes and objects are listed; illustrations, renders, abstract art, logos,
paintings, cut-outs on transparent backgrounds and near-duplicates (stereo pairs, a tampered copy) are not.
Installed with ``apt-get install -y --no-install-recommends`` + the package names (training/README.md).

Two packages keep their photos inside archives: Enlightenment's backgrounds (``.edj``: one JPEG per file, stored
at several sizes) and GCompris' activity resources (Qt ``.rcc``: WebP/JPEG). Those are extracted, bytes unchanged,
into ``training/runs/cache/embedded/`` so that every training image is a plain file that the evaluation-isolation
check (``data/isolation.py``) reads like any other.

Packages searched and rejected (no real photographs, or none usable): gnome-backgrounds, ukui-wallpapers,
desktop-base, debian-edu-artwork-*, xfdesktop4-data, sway-backgrounds, lomiri-wallpapers (abstract or illustrated);
tuxpaint-stamps-default (photo cut-outs on transparent backgrounds, mostly < 256 px); stellarium-data (panorama
strips with the sky cut out); kstars-data (astronomical/planet textures); krita-data, mypaint-data-extras
(texture tiles); ulcc, gcompris' ``lang``/``details``/``babyshapes`` resources (clip art, paintings); kdegames
backgrounds (SVG).
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHARE = Path("/usr/share")
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "runs" / "cache" / "embedded"
EMBED_PREFIX = "pkgphoto-"  # extracted files' names start with this (kept by training.gpu's photo pack)
MIN_COLOURFULNESS = 4.0  # Hasler–Süsstrunk M: drops B&W photos (GCompris' B&W stadium: 0.2), keeps grey scenes (≥ 5.9)


@dataclass(frozen=True)
class PhotoPackage:
    name: str
    files: tuple[str, ...] = ()  # photographs, relative to /usr/share
    # The package's other images inside the wallpaper folders that sources.training_photo_sources scans: kept out
    # of that scan, so the photo sets of the other models stay exactly what they were before these installs.
    rejected: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()  # archives holding embedded photographs, relative to /usr/share
    first_only: bool = False  # each container holds one photograph at several sizes


_LOMIRI = "backgrounds/{}.jpg"
_OPENCV = "doc/opencv-doc/examples/{}"
_E_BG = "enlightenment/data/backgrounds/{}.edj"
_GCOMPRIS = "gcompris-qt/rcc/{}.rcc"

PHOTO_PACKAGES: tuple[PhotoPackage, ...] = (
    PhotoPackage("lomiri-wallpapers-16.04", tuple(_LOMIRI.format(n) for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi", "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")),
        rejected=tuple(_LOMIRI.format(n) for n in (  # abstract bokeh, a rendered clock, a colour gradient
            "analogpattern_by_Peter_Nerlich", "greentock_by_Peter_Nerlich", "umang_by_Abhishek_Mudgal"))),
    PhotoPackage("lomiri-wallpapers-20.04", (_LOMIRI.format("Kleiber_by_Lukas_Baubkus"),),
                 rejected=tuple(_LOMIRI.format(n) for n in (  # illustration, digital art, stripes
                     "Fossa_by_Jasper_Roks", "Infinite-Sea_by_Aury88", "Painting-Colors_by__herobrine7gamer"))),
    PhotoPackage("lxqt-themes", tuple(f"lxqt/wallpapers/{n}" for n in (
        "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png", "beam.png",
        "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg", "this-is-not-windows.jpg"))),
    PhotoPackage("palapeli-data", tuple(f"palapeli/collection/{n}.jpg" for n in (
        "castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee", "panther-chameleon-female"))),
    PhotoPackage("puzzle-jigsaw", ("puzzle-jigsaw/samples/cat-animal-cat-portrait-mackerel.jpg",
                                   "puzzle-jigsaw/samples/pexels-photo-302304.jpeg")),
    PhotoPackage("digikam-data", ("digikam/about/images/body-background.jpg",)),
    # OpenCV's sample photos; one of each stereo/flow/tamper pair, no synthetic or grey images.
    PhotoPackage("opencv-doc", tuple(_OPENCV.format(n) for n in (
        "alphamat/input_images/plant.jpg", "data/aero1.jpg", "data/aloeL.jpg", "data/apple.jpg", "data/baboon.jpg",
        "data/board.jpg", "data/building.jpg", "data/butterfly.jpg", "data/chicky_512.png", "data/ela_original.jpg",
        "data/fruits.jpg", "data/graf1.png", "data/home.jpg", "data/left.jpg", "data/leuvenA.jpg", "data/messi5.jpg",
        "data/orange.jpg", "data/rubberwhale1.png", "data/smarties.png", "data/squirrel_cls.jpg", "data/stuff.jpg",
        "dnn_superres/butterfly.png", "reg/home.png",  # (hfs/data/*.jpg: photos, but 254 px < MIN_SIDE)
        *(f"text/scenetext0{i}.jpg" for i in range(1, 7))))),
    # Photographic backgrounds (Dunes, Flat-*, Paper-Flower, Squiggle*, Sunset-Hills are drawn or textures;
    # Foggy-Trees is almost black).
    PhotoPackage("enlightenment-data", containers=tuple(_E_BG.format(n) for n in (
        "Bamboo", "God-Rays", "Green-Maple", "Lichen-Branches", "Mountain", "Peaks", "Red-Maple", "Sea-of-Lanterns",
        "Snow-Trees", "Spruce-Needles", "Sunset-Clouds", "White-Flower", "Yellow-Flower")), first_only=True),
    # Animal, underwater, monument, farm and musical-instrument photographs of GCompris' activities.
    PhotoPackage("gcompris-qt-data", containers=tuple(_GCOMPRIS.format(n) for n in (
        "erase", "explore_farm_animals", "explore_monuments", "explore_world_animals", "explore_world_music",
        "categorization"))),
)


def _stem_tails() -> tuple[str, ...]:
    # Without the suffix: training.gpu's photo pack re-encodes every photo as .jpg under the same tail.
    return tuple(str(Path(f).with_suffix("")) for p in PHOTO_PACKAGES for f in p.files)


_TAILS = _stem_tails()


def is_package_photo(path: Path) -> bool:
    """A photograph from one of :data:`PHOTO_PACKAGES` (installed, extracted, or in training.gpu's pack)."""
    if path.name.startswith(EMBED_PREFIX):
        return True
    text = str(Path(path).with_suffix(""))
    return any(text.endswith(tail) for tail in _TAILS)


def package_files(share: Path = SHARE) -> set[Path]:
    """Every image file the photo packages put under /usr/share that is listed above (photos and rejects)."""
    return {share / f for p in PHOTO_PACKAGES for f in (*p.files, *p.rejected)}


def package_photo_paths(share: Path = SHARE, embedded_dir: Path = EMBEDDED_DIR) -> list[tuple[str, Path]]:
    """(package, file) of every installed package photograph; embedded ones extracted on first use."""
    found: list[tuple[str, Path]] = []
    for package in PHOTO_PACKAGES:
        found += [(package.name, share / f) for f in package.files if (share / f).is_file()]
        for container in package.containers:
            if (share / container).is_file():
                found += [(package.name, p) for p in
                          extract_embedded(share / container, embedded_dir, package.name, package.first_only)]
    return found


def has_colour(img: np.ndarray) -> bool:
    """Hasler–Süsstrunk colourfulness (uint8 RGB) above :data:`MIN_COLOURFULNESS`: not a B&W or sepia photo."""
    x = img.astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())) >= MIN_COLOURFULNESS


# --- embedded images ------------------------------------------------------------------------------------------


def jpeg_end(data: bytes, start: int) -> int | None:
    """End offset of the JPEG stream starting at ``start`` (its SOI), walking the marker segments; None if broken."""
    j, n = start + 2, len(data)
    while j + 4 <= n:
        if data[j] != 0xFF:
            return None
        marker = data[j + 1]
        if marker == 0xFF:  # fill byte
            j += 1
            continue
        if marker == 0xD9:  # EOI
            return j + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            j += 2
            continue
        j += 2 + struct.unpack(">H", data[j + 2:j + 4])[0]
        if marker == 0xDA:  # entropy-coded data: runs to the next marker that is not a stuffed 0 or a restart
            while True:
                k = data.find(b"\xff", j)
                if k < 0 or k + 1 >= n:
                    return None
                following = data[k + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    j = k + 2
                elif following == 0xFF:
                    j = k + 1
                else:
                    j = k
                    break
    return None


def embedded_images(data: bytes, min_side: int) -> list[tuple[int, str, bytes]]:
    """(offset, suffix, bytes) of every complete JPEG and WebP stream in ``data`` with both sides ≥ ``min_side``."""
    found: list[tuple[int, str, bytes]] = []
    i = 0
    while (i := data.find(b"\xff\xd8\xff", i)) >= 0:
        end = jpeg_end(data, i)
        if end is not None:
            found.append((i, ".jpg", data[i:end]))
            i = end
        else:
            i += 3
    i = 0
    while (i := data.find(b"RIFF", i)) >= 0:
        size = struct.unpack("<I", data[i + 4:i + 8])[0] + 8 if i + 8 <= len(data) else 0
        if data[i + 8:i + 12] == b"WEBP" and i + size <= len(data):
            found.append((i, ".webp", data[i:i + size]))
            i += size
        else:
            i += 4
    keep = []
    for offset, suffix, blob in sorted(found):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if min(im.size) >= min_side:
                    im.load()  # a truncated or misparsed stream fails here, not during training
                    keep.append((offset, suffix, blob))
        except (OSError, ValueError, SyntaxError):
            continue
    return keep


def extract_embedded(container: Path, out_dir: Path, package: str, first_only: bool = False,
                     min_side: int = 256) -> list[Path]:
    """Writes the embedded photographs of ``container`` into ``out_dir`` (once; an index file records the
    container's size and mtime) and returns their paths."""
    stem = f"{EMBED_PREFIX}{package}-{container.stem}"
    index = out_dir / f"{stem}.json"
    stat = container.stat()
    key = {"container": str(container), "size": stat.st_size, "mtime": int(stat.st_mtime), "first_only": first_only,
           "min_side": min_side}
    if index.is_file():
        recorded = json.loads(index.read_text())
        if recorded.get("key") == key and all((out_dir / n).is_file() for n in recorded["files"]):
            return [out_dir / n for n in recorded["files"]]
    images = embedded_images(container.read_bytes(), min_side)
    if first_only:
        images = images[:1]
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for offset, suffix, blob in images:
        name = f"{stem}-{offset}{suffix}"
        tmp = out_dir / f".{name}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, out_dir / name)  # atomic: a concurrent reader never sees half a file
        names.append(name)
    tmp = out_dir / f".{stem}.json.tmp"
    tmp.write_text(json.dumps({"key": key, "files": names}))
    os.replace(tmp, index)
    return [out_dir / n for n in names]
