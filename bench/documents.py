"""Documents: pages/s and peak memory against page count, output/input size of restored bilevel and gray pages, and
a restored gray page under every lossless encoding the outputs could use.

Each run restores one generated document in a fresh process (embedded, the shipped doc-denoise model, local files)
and reads its peak RSS (VmHWM). Pages are made from the shipped sample scans, so the model sees real-looking dirt.
Memory should be flat in page count apart from the compressed input and output documents, which are held whole.

Usage: nice -n 19 python bench/documents.py [--pages 10,100,500] [--side 700] [--ratio-dpi 200]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin

from common import REPO, RESULTS, git_commit, markdown_table, write_results  # noqa: E402


def sample_page(width: int, height: int, seed: int) -> np.ndarray:
    """A gray page cut from the shipped dirty sample scans (different crops per seed)."""
    name = ("dirty-page-1.png", "dirty-page-2.png")[seed % 2]
    source = np.asarray(Image.open(REPO / "samples" / "documents" / name).convert("L"))
    reps = (-(-height // source.shape[0]) + 1, -(-width // source.shape[1]) + 1)
    big = np.tile(source, reps)
    y, x = (seed * 37) % source.shape[0], (seed * 53) % source.shape[1]
    return np.ascontiguousarray(big[y:y + height, x:x + width])


def make_tiff(path: Path, pages: int, width: int, height: int, bilevel: bool, dpi: int, noise: float = 0.0) -> None:
    """Page by page into one TIFF, so making a 500-page input never holds 500 pages. ``noise``: the sensor noise
    (σ, gray levels) a real scanner adds to the paper, which the sample pages (flat white paper) lack."""
    with open(path, "w+b") as fh, TiffImagePlugin.AppendingTiffWriter(fh, new=True) as writer:
        for seed in range(pages):
            gray = sample_page(width, height, seed)
            if noise:
                jitter = np.random.default_rng(seed).normal(0, noise, gray.shape)
                gray = np.clip(gray + jitter, 0, 255).astype(np.uint8)
            page = Image.fromarray(gray > 150) if bilevel else Image.fromarray(gray)
            page.save(writer, format="TIFF", compression="group4" if bilevel else "tiff_adobe_deflate",
                      dpi=(dpi, dpi), **({"tiffinfo": {262: 0}} if bilevel else {}))
            writer.newFrame()


def make_pdf(path: Path, pages: int, width: int, height: int, dpi: int) -> None:
    """A scanner-style PDF: one JPEG (quality 75) per page, placed with img2pdf."""
    import img2pdf

    def jpegs():
        for seed in range(pages):
            buffer = io.BytesIO()
            Image.fromarray(sample_page(width, height, seed)).save(buffer, format="JPEG", quality=75, dpi=(dpi, dpi))
            yield buffer.getvalue()

    path.write_bytes(img2pdf.convert(list(jpegs())))


def run_one(kind: str, pages: int, side: int, folder: Path) -> dict:
    """In a child process: make the document, restore it, report seconds, RSS and sizes."""
    width, height = side, round(side * 1.414)
    source = folder / f"in-{kind}-{pages}.{'pdf' if kind == 'pdf' else 'tif'}"
    if kind == "pdf":
        make_pdf(source, pages, width, height, 100)
    else:
        make_tiff(source, pages, width, height, kind == "bilevel-tiff", 100)
    code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from services.config import Settings
from services.jobs import Job
from services.restorer import Restorer
restorer = Restorer(Settings(max_document_pages=100000))
job = Job(task="denoise", profile="document", input_url={str(source)!r}, output_url={str(folder / ('out-' + source.name))!r})
restorer.registry.load(restorer.registry.resolve("denoise", "document"))  # model load is not a page's time
started = time.perf_counter()
done = restorer.restore(job)
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({{"seconds": seconds, "peak_rss_mb": hwm, "out_bytes": done.result.bytes,
                  "provider": done.provider, "model": done.result.model, "pages": done.result.pages.model_dump()}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    in_bytes = source.stat().st_size
    source.unlink()
    (folder / ("out-" + source.name)).unlink()
    return {"document": kind, "pages": pages, "page_px": f"{width}×{height}", "seconds": round(row["seconds"], 2),
            "pages_per_s": round(pages / row["seconds"], 2), "peak_rss_mb": round(row["peak_rss_mb"], 1),
            "in_mb": round(in_bytes / 2**20, 2), "out_mb": round(row["out_bytes"] / 2**20, 2),
            "rss_less_documents_mb": round(row["peak_rss_mb"] - (in_bytes + row["out_bytes"]) / 2**20, 1),
            "model": row["model"], "provider": row["provider"]}


def size_ratios(folder: Path, dpi: int, count: int) -> list[dict]:
    """A4 pages at ``dpi``: restored size / input size for Group 4 bilevel TIFF, deflate gray TIFF and JPEG PDF."""
    from services.config import Settings
    from services.jobs import Job
    from services.restorer import Restorer

    width, height = round(8.27 * dpi), round(11.69 * dpi)
    restorer = Restorer(Settings())
    rows = []
    for kind, suffix in (("bilevel-tiff", "tif"), ("gray-tiff", "tif"), ("gray-tiff-scanner-noise", "tif"),
                         ("pdf", "pdf")):
        source = folder / f"ratio-{kind}.{suffix}"
        if kind == "pdf":
            make_pdf(source, count, width, height, dpi)
        else:
            make_tiff(source, count, width, height, kind == "bilevel-tiff", dpi, 3.0 if "noise" in kind else 0.0)
        target = folder / f"ratio-out-{kind}.{suffix}"
        done = restorer.restore(Job(task="denoise", profile="document", input_url=str(source), output_url=str(target)))
        in_bytes, out_bytes = source.stat().st_size, target.stat().st_size
        rows.append({"document": kind, "pages": count, "page_px": f"{width}×{height} ({dpi} dpi A4)",
                     "input": {"bilevel-tiff": "Group 4", "gray-tiff": "8-bit deflate",
                               "gray-tiff-scanner-noise": "8-bit deflate, paper noise σ 3",
                               "pdf": "JPEG q75 in PDF"}[kind],
                     "output": {"bilevel-tiff": "Group 4 (1-bit)", "gray-tiff": "8-bit deflate",
                                "gray-tiff-scanner-noise": "8-bit deflate",
                                "pdf": "within the input's bytes (JPEG with its tables, else deflate, else coarser tables)"}[kind],
                     "in_kb_per_page": round(in_bytes / count / 1024, 1),
                     "out_kb_per_page": round(out_bytes / count / 1024, 1),
                     "ratio": round(out_bytes / in_bytes, 3), "mode": done.result.mode})
    return rows


def gray_encodings(dpi: int) -> list[dict]:
    """One gray A4 page restored by the shipped model, written every lossless way the document outputs could use, and
    two ways that change pixels (for comparison only): sizes / the input's (8-bit deflate TIFF). ``flat paper``: the
    same page with its paper (≥ 240) made exactly white first, as a page that was cleaned or thresholded before."""
    import zlib

    from services.config import Settings
    from services.imaging.codecs import encode
    from services.jobs import Job
    from services.restorer import Restorer

    def tiff_size(pixels: np.ndarray, compression: str = "tiff_adobe_deflate", **extra) -> int:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="TIFF", compression=compression, **extra)
        return len(buffer.getvalue())

    def zlib_size(pixels: np.ndarray, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> int:
        packer = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
        return len(packer.compress(pixels.tobytes()) + packer.flush())

    restorer = Restorer(Settings())
    job = Job(task="denoise", profile="document", input_url="-", output_url="-")
    rows = []
    for page in ("sample scan", "flat paper"):
        gray = sample_page(round(8.27 * dpi), round(11.69 * dpi), 0)
        if page == "flat paper":
            gray = np.where(gray >= 240, 255, gray).astype(np.uint8)
        restored = restorer.infer(job, gray[..., None])[0].pixels[..., 0]
        source = tiff_size(gray)
        kept_white = restored.copy()
        kept_white[(gray == 255) & (restored >= 240)] = 255
        sizes = {
            "TIFF deflate (written now)": tiff_size(restored),
            "TIFF LZW": tiff_size(restored, "tiff_lzw"),
            "TIFF deflate + predictor 2": tiff_size(restored, tiffinfo={317: 2}),
            "PDF Flate zlib 6 (written now)": zlib_size(restored, 6),
            "PDF Flate zlib 9": zlib_size(restored, 9),
            "PDF Flate zlib 1 run-length": zlib_size(restored, 1, zlib.Z_RLE),
            "PNG (codecs.encode: png-pages)": len(encode(restored[..., None], None, "PNG").data),
            "lossy: input's white kept white": tiff_size(kept_white),
            "lossy: ink (< 64) made black": tiff_size(np.where(restored < 64, 0, restored).astype(np.uint8)),
        }
        for encoding, size in sizes.items():
            rows.append({"page": page, "input_white": round(float((gray == 255).mean()), 3), "encoding": encoding,
                         "ratio": round(size / source, 3)})
    return rows


def carried_rows(kinds: list[str]) -> list[dict]:
    """The last results' scaling rows of the kinds not measured this time (a change to one kind's path need not
    rerun the others' 10-minute documents), each saying when it was measured."""
    previous = RESULTS / "documents.json"
    if not previous.is_file():
        return []
    data = json.loads(previous.read_text())
    when = f"{data['machine']['date'][:10]}, {data['machine']['cpu']}"
    return [{**row, "measured": row.get("measured", when)} for row in data.get("scaling", [])
            if row["document"] not in kinds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="10,100,500")
    parser.add_argument("--kinds", default="bilevel-tiff,pdf", help="documents to time ('' : none)")
    parser.add_argument("--side", type=int, default=600, help="page width in pixels (height is width × 1.414)")
    parser.add_argument("--ratio-dpi", type=int, default=200)
    parser.add_argument("--ratio-pages", type=int, default=2)
    parser.add_argument("--note", default="run alone on the machine",
                        help="how it ran, for the results (e.g. beside a training job under nice -n 19)")
    args = parser.parse_args()
    counts = [int(n) for n in args.pages.split(",")]
    kinds = [kind for kind in args.kinds.split(",") if kind]  # none: the size sections alone, every row carried
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = carried_rows(kinds)
        measured = f"this run (commit {git_commit()})"
        for kind in kinds:
            for count in counts:
                started = time.perf_counter()
                rows.append({**run_one(kind, count, args.side, folder), "measured": measured})
                print(rows[-1], f"({time.perf_counter() - started:.0f} s with generation)", flush=True)
        ratios = size_ratios(folder, args.ratio_dpi, args.ratio_pages)
        encodings = gray_encodings(args.ratio_dpi)
    scaling = ["document", "pages", "page_px", "seconds", "pages_per_s", "peak_rss_mb", "in_mb", "out_mb",
               "rss_less_documents_mb", "measured"]
    model = f"{rows[0]['model']} on {rows[0]['provider']}"
    write_results("documents", "Documents: pages/s, memory against page count, output sizes", {
        "scaling": rows, "size_ratios": ratios, "gray_encodings": encodings, "args": vars(args),
    }, [
        ("Pages/s and peak RSS against page count", markdown_table(rows, scaling) + "\n\n"
         f"Embedded restore of one document per fresh process, {model}; {args.note}. "
         "`rss_less_documents_mb` is peak RSS minus the compressed input and output documents, which are held whole: "
         "the rest — one decoded page, the model, the runtime — should not grow with the page count."),
        ("Output size against input size (restored / input)", markdown_table(ratios) + "\n\n"
         "Bilevel pages are thresholded back to 1 bit (Otsu on the restored page, clamped to 96–160) and written "
         "Group 4; before issue 14 such a page came back as 8-bit gray deflate."),
        ("A restored gray page written every lossless way (restored / input)", markdown_table(encodings) + "\n\n"
         "Input: the page as 8-bit deflate TIFF. The `lossy:` rows change the restored pixels and are for comparison "
         "only (the doc-denoise graph itself makes outputs ≥ 0.94, i.e. 240, exactly white: `net.paper_white`)."),
    ])


if __name__ == "__main__":
    main()
