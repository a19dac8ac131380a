"""Documents as archives hold them: PDFs and multi-page (or bilevel) TIFFs in, the same kind of document out.

Every page goes through the same model step as a single image (``Restorer.infer``) and the same colour rules
(``codecs.frame_arrays`` / ``codecs.arrays_image``); this module only splits documents into pages and puts the
restored pages back:

- **TIFF**: pages are written in order into one multi-page TIFF, each keeping its DPI, photometric interpretation
  and compression where that is lossless (Group 3/4, LZW, deflate, PackBits; uncompressed bilevel pages become
  Group 4, other uncompressed pages deflate; JPEG pages stay JPEG at IMGRESTORE_JPEG_QUALITY).
- **PDF**: a page drawn as one scanned image has that image replaced in place (pikepdf), so page size, text layers,
  bookmarks, links and metadata survive; a page with a scan plus other visible content is rendered (pypdfium2) and
  its content replaced by the restored rendering; born-digital pages (no page-sized image) are left untouched and
  counted as passed through.
- **Bilevel**: a 1-bit page comes back 1-bit (see ``bilevel_threshold``), Group 4 in TIFF and CCITT G4 in PDF.
- **Other outputs** (``--format``, ``document_output``): a PDF can be written as a multi-page TIFF and a TIFF as a PDF
  (one image per page, sized from its DPI), either as a folder (S3: a prefix) of page images ``page-0001.png``…
  (``png-pages``, ``jpeg-pages``, ``tiff-pages``); a one-page document also as a single image. Born-digital PDF
  pages are then rendered and written as rendered (still counted as passed through).
- **Streaming**: one decoded page is in memory at a time (plus the compressed input and output documents); the
  output is uploaded once, whole, after the last page — a failure leaves nothing at the output key.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol

import numpy as np
from PIL import Image, TiffImagePlugin

from ..errors import DocumentTooLargeError, ImageDecodeError, UnsupportedImageError
from ..jobs import Job, OutputInfo, PageCounts, RestoreOutcome, StageTimings
from ..memory import release_free_memory
from .codecs import (CONTENT_TYPES, DOCUMENT_ONLY_FORMATS, EXTENSIONS, PAGE_FOLDER_FORMATS, DecodedImage,
                     arrays_image, check_size, encode, frame_arrays, to_uint8)

if TYPE_CHECKING:
    from ..config import Settings
    from ..inference.registry import LoadedModel
    from ..inference.runner import InferenceOutput
    from ..storage import StorageRouter
    from ..time_limits import JobClock

log = logging.getLogger(__name__)


class PageRestorer(Protocol):
    """What a document needs of ``services.restorer.Restorer``: its settings and storage, and the model step of
    one page. Typed here, so this module builds on the restorer's shape without importing it."""

    settings: Settings
    storage: StorageRouter

    def infer(self, job: Job, pixels: np.ndarray,
              clock: JobClock | None = None) -> tuple[InferenceOutput, LoadedModel, str | None]: ...


DocumentKind = Literal["pdf", "tiff"]
PDF_CONTENT_TYPE = "application/pdf"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# Source TIFF compression -> what the restored page is written with (lossless where the source was).
_BILEVEL_COMPRESSION = {"group4": "group4", "group3": "group3", "tiff_ccitt": "tiff_ccitt", "packbits": "packbits",
                        "tiff_lzw": "tiff_lzw", "tiff_adobe_deflate": "tiff_adobe_deflate",
                        "tiff_deflate": "tiff_adobe_deflate"}
_COMPRESSION = {"tiff_lzw": "tiff_lzw", "tiff_adobe_deflate": "tiff_adobe_deflate",
                "tiff_deflate": "tiff_adobe_deflate", "packbits": "packbits", "jpeg": "jpeg"}


def document_kind(data: bytes) -> DocumentKind | None:
    """``pdf`` or ``tiff`` for what this module restores; None for single images (``codecs.decode``'s business).

    A TIFF is a document when it has several pages or a bilevel first page (so Group 4 stays Group 4); a TIFF whose
    header cannot be read is left to ``decode``, which reports it."""
    if b"%PDF-" in data[:1024]:  # the spec lets the header start anywhere in the first 1 KiB
        return "pdf"
    if data[:4] not in _TIFF_MAGIC:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return "tiff" if image.mode == "1" or getattr(image, "n_frames", 1) > 1 else None
    except Exception:  # a corrupt header: decode() says so with its usual message
        return None


def bilevel_threshold(gray: np.ndarray) -> int:
    """The grey level (0‥255) at or above which a restored page becomes white when written back as 1-bit.

    The document models output near-binary pages (paper near 255, ink near 0), so Otsu's threshold on the restored
    page separates them cleanly; it is clamped to 96‥160 so a page that is mostly paper or mostly ink cannot drag it
    to an extreme, and a page without two distinct tones (blank, or solid) uses the midpoint 128."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * levels)
    below, above = weight[:-1], total - weight[:-1]
    valid = (below > 0) & (above > 0)
    if not valid.any():
        return 128
    mean_below = np.where(valid, mass[:-1] / np.maximum(below, 1), 0)
    mean_above = np.where(valid, (mass[-1] - mass[:-1]) / np.maximum(above, 1), 0)
    between = np.where(valid, below * above * (mean_below - mean_above) ** 2, -1)
    split = int(np.argmax(between))
    if mean_above[split] - mean_below[split] < 64:  # no ink/paper pair worth the name
        return 128
    return int(np.clip(split + 1, 96, 160))


def to_bilevel(pixels: np.ndarray) -> Image.Image:
    """A restored gray page (H, W, 1) as a 1-bit Pillow image."""
    gray = to_uint8(pixels)[..., 0]
    return Image.fromarray(gray >= bilevel_threshold(gray))


@dataclass
class _Progress:
    """What a document job accumulates over its pages: timings summed, counts, the first page's size."""

    job: Job
    timings: StageTimings
    pages: PageCounts
    tiles: int = 0
    megapixels: float = 0.0
    model: str | None = None
    profile: str | None = None
    provider: str | None = None
    first_size: tuple[int, int] | None = None
    mode: str = ""
    seen: set = field(default_factory=set)
    clock: JobClock | None = None  # the job's time limit: each page's megapixels add to it

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.timings, name, round((getattr(self.timings, name) or 0.0) + time.perf_counter() - started, 6))

    def restored(self, image: DecodedImage, restorer: PageRestorer) -> np.ndarray:
        """Runs the model on one page; returns the restored pixels."""
        if self.clock is not None:
            self.clock.count(image.megapixels)
            self.clock.check(f"page {self.pages.restored + 1}")
        with self.stage("infer"):
            output, model, profile = restorer.infer(self.job, image.pixels, clock=self.clock)
        self.tiles += output.tiles
        self.megapixels += image.megapixels
        self.model, self.profile, self.provider = model.qualified_name, profile, model.provider
        if self.first_size is None:
            self.first_size = (image.width, image.height)
        self.pages.restored += 1
        return output.pixels


def _page_error(index: int, total: int, exc: BaseException) -> ImageDecodeError:
    return ImageDecodeError(f"page {index + 1} of {total} is corrupt or unreadable: {exc}; nothing was written")


def _check_page(index: int, total: int, width: int, height: int, max_pixels: int, what: str = "") -> None:
    page = f"page {index + 1} of {total}"
    check_size(width, height, max_pixels, "IMGRESTORE_MAX_PAGE_PIXELS", subject=page, where=f"{page}{what}: ")


def _check_page_count(total: int, limit: int, kind: str) -> None:
    if total > limit:
        raise DocumentTooLargeError(
            f"{kind} has {total} pages, more than the limit of {limit} (IMGRESTORE_MAX_DOCUMENT_PAGES); "
            "split it or raise the limit"
        )
    if total < 1:
        raise ImageDecodeError(f"{kind} has no pages")


def document_output(kind: DocumentKind, output_format: str | None) -> str:
    """What a document is written as: ``PDF``, ``TIFF`` (multi-page), a ``PAGE_FOLDER_FORMATS`` name (one image file
    per page under the output URL, a folder or an S3 prefix), or a single-image format (one-page documents only)."""
    if output_format is None:
        return "PDF" if kind == "pdf" else "TIFF"
    return output_format


def refuse_document_format_for_image(output_format: str | None) -> None:
    """A single image has no pages to write as a PDF or a page folder: say so instead of guessing."""
    if output_format in DOCUMENT_ONLY_FORMATS:
        raise UnsupportedImageError(
            f"output format {output_format.lower()} is for documents (PDFs, multi-page or bilevel TIFFs); a single "
            "image is written as png, jpeg, tiff, webp or bmp: restore documents and images in separate runs"
        )


def page_file_name(index: int, total: int, fmt: str) -> str:
    """``page-0001.png``…: zero-padded so the names sort in page order (at least 4 digits)."""
    return f"page-{index + 1:0{max(4, len(str(total)))}d}{EXTENSIONS[PAGE_FOLDER_FORMATS[fmt]]}"


def page_url(folder_url: str, index: int, total: int, fmt: str) -> str:
    """Where page ``index`` of a page-folder output goes (``folder_url`` with or without its trailing slash)."""
    return folder_url.rstrip("/") + "/" + page_file_name(index, total, fmt)


def output_preview_url(job: Job) -> str:
    """The file that shows a finished job's output: its output URL, or for page images the first page's."""
    fmt = job.options.output_format
    if fmt in PAGE_FOLDER_FORMATS and job.result is not None and job.result.pages is not None:
        return page_url(job.output_url, 0, job.result.pages.total, fmt)
    return job.output_url


def restore_document(restorer: PageRestorer, job: Job, data: bytes, timings: StageTimings,
                     clock: JobClock | None = None) -> RestoreOutcome:
    """Restores a document job end to end (the download already happened) within the job's time limit (``clock``)
    and uploads the result once: every file of it is written after the last page, so a failed document leaves nothing
    at its output."""
    kind = document_kind(data) or "tiff"
    target = document_output(kind, job.options.output_format)
    progress = _Progress(job, timings, PageCounts(total=0, restored=0), clock=clock)
    if kind == "pdf" and target == "PDF":
        files = [(job.output_url, _restore_pdf(restorer, progress, data), PDF_CONTENT_TYPE)]
    else:
        pages = _pdf_pages(restorer, progress, data) if kind == "pdf" else _tiff_pages(restorer, progress, data)
        sink = _sink(target, restorer.settings, job, progress.pages.total, kind)
        for page in pages:
            with progress.stage("encode"):
                sink.add(page)
        files = sink.files(job.output_url)
        progress.mode = "+".join(dict.fromkeys(sink.modes))
    if clock is not None:
        clock.check("encode")  # before the upload: a document over its limit leaves no output
    with progress.stage("upload"):
        for url, body, content_type in files:
            restorer.storage.write(url, body, content_type)
    pages = progress.pages
    from .. import metrics  # prometheus_client: imported by the documents that reach here, not by every start-up

    metrics.record_pages(job.task.value, pages.restored, pages.passed_through)
    width, height = progress.first_size or (0, 0)
    result = OutputInfo(
        width=width, height=height, mode=progress.mode, format=target, bytes=sum(len(f[1]) for f in files),
        megapixels=round(progress.megapixels, 6), model=progress.model or "none (no page needed a model)",
        profile=progress.profile, tiles=progress.tiles, pages=pages,
    )
    log.info("document restored", extra={"job_id": job.id, "task": job.task.value, "pages": pages.model_dump(),
                                         "timings": timings.model_dump()})
    return RestoreOutcome(result=result, timings=timings, provider=progress.provider or "none")


@dataclass
class _Page:
    """One page on its way out: restored pixels (a passed-through PDF page: its rendering) and what the written page
    keeps of its source."""

    pixels: np.ndarray
    bilevel: bool  # a 1-bit source page: thresholded back to 1 bit
    compression: str  # the source's, as Pillow names TIFF compressions ("raw" when none)
    dpi: tuple[float, float] | None
    photometric: int | None = None


def _sink(target: str, settings: Settings, job: Job, total: int, kind: DocumentKind) -> _TiffSink | _PdfSink | _PageFiles:
    quality = job.options.jpeg_quality or settings.jpeg_quality
    if target == "TIFF":
        return _TiffSink(quality)
    if target == "PDF":
        return _PdfSink(quality, settings.pdf_render_dpi)
    if target in PAGE_FOLDER_FORMATS:
        return _PageFiles(target, total, quality, settings.png_compress_level)
    if total > 1:
        raise UnsupportedImageError(
            f"the {'PDF' if kind == 'pdf' else 'TIFF'} has {total} pages and {target.lower()} holds one image: ask "
            f"for {target.lower()}-pages (a folder of page images), tiff or pdf"
        )
    return _PageFiles(target, total, quality, settings.png_compress_level, single=True)


class _TiffSink:
    """Pages appended to one multi-page TIFF, in memory (compressed)."""

    def __init__(self, jpeg_quality: int) -> None:
        self.jpeg_quality = jpeg_quality
        self.out = io.BytesIO()
        self.writer = TiffImagePlugin.AppendingTiffWriter(self.out, new=True)
        self.modes: list[str] = []

    def add(self, page: _Page) -> None:
        image, options = _tiff_page(page, self.jpeg_quality)
        self.modes.append(image.mode)
        image.save(self.writer, format="TIFF", **options)
        self.writer.newFrame()

    def files(self, url: str) -> list[tuple[str, bytes, str]]:
        return [(url, self.out.getvalue(), "image/tiff")]


class _PdfSink:
    """Pages as a new PDF, one image per page drawn over the whole page (sized from the page's DPI, else
    IMGRESTORE_PDF_RENDER_DPI): Group 4 for bilevel pages, JPEG for JPEG pages, deflate otherwise."""

    def __init__(self, jpeg_quality: int, default_dpi: int) -> None:
        import pikepdf

        self.jpeg_quality, self.default_dpi = jpeg_quality, default_dpi
        self.pdf = pikepdf.new()
        self.modes: list[str] = []

    def add(self, page: _Page) -> None:
        import pikepdf

        height, width = page.pixels.shape[:2]
        dpi_x, dpi_y = page.dpi or (self.default_dpi, self.default_dpi)
        size = (width * 72.0 / dpi_x, height * 72.0 / dpi_y)
        self.pdf.add_blank_page(page_size=size)
        if page.bilevel:
            data, params = _g4_strip(to_bilevel(page.pixels))
            stream = pikepdf.Stream(self.pdf, data)
            stream.Filter, stream.DecodeParms = pikepdf.Name.CCITTFaxDecode, params
            stream.BitsPerComponent, stream.ColorSpace, mode = 1, pikepdf.Name.DeviceGray, "1"
            stream.Type, stream.Subtype, stream.Width, stream.Height = (pikepdf.Name.XObject, pikepdf.Name.Image,
                                                                       width, height)
        else:
            stream, mode = _image_stream(self.pdf, page.pixels, self.jpeg_quality if page.compression == "jpeg" else None)
        self.modes.append(mode)
        target = self.pdf.pages[-1]
        target.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=stream))
        target.obj.Contents = self.pdf.make_stream(f"q {size[0]:.4f} 0 0 {size[1]:.4f} 0 0 cm /Im0 Do Q".encode())

    def files(self, url: str) -> list[tuple[str, bytes, str]]:
        return [(url, _written(self._save), PDF_CONTENT_TYPE)]

    def _save(self, saved: BinaryIO) -> None:
        pdf, self.pdf = self.pdf, None  # dropped on return: its pages' images go with it (see ``_written``)
        with pdf:
            pdf.save(saved, compress_streams=True)


class _PageFiles:
    """One image file per page (``page_file_name``), or the only page of a one-page document at the output URL
    itself (``single``). Held compressed until the last page, then written."""

    def __init__(self, fmt: str, total: int, jpeg_quality: int, png_compress_level: int, single: bool = False) -> None:
        self.fmt, self.total, self.single = fmt, total, single
        self.image_format = fmt if single else PAGE_FOLDER_FORMATS[fmt]
        self.jpeg_quality, self.png_compress_level = jpeg_quality, png_compress_level
        self.encoded: list[bytes] = []
        self.modes: list[str] = []

    def add(self, page: _Page) -> None:
        if self.image_format == "TIFF":  # keeps Group 4 for bilevel pages, as a multi-page TIFF would
            image, options = _tiff_page(page, self.jpeg_quality)
            buffer = io.BytesIO()
            image.save(buffer, format="TIFF", **options)
            data, mode = buffer.getvalue(), image.mode
        else:
            pixels = page.pixels
            if page.bilevel:  # exactly black and white: encode writes a 1-bit PNG of it
                pixels = (np.asarray(to_bilevel(pixels), dtype=np.uint8) * 255)[..., None]
            encoded = encode(pixels, None, self.image_format, jpeg_quality=self.jpeg_quality,
                             png_compress_level=self.png_compress_level, dpi=page.dpi,
                             content="document")  # pages of a scanned document: the document PNG layout
            data, mode = encoded.data, encoded.mode
        self.encoded.append(data)
        self.modes.append(mode)

    def files(self, url: str) -> list[tuple[str, bytes, str]]:
        content_type = CONTENT_TYPES[self.image_format]
        if self.single:
            return [(url, data, content_type) for data in self.encoded]
        return [(page_url(url, index, self.total, self.fmt), data, content_type)
                for index, data in enumerate(self.encoded)]


# --- TIFF ---------------------------------------------------------------------------------------------------------
def _tiff_pages(restorer: PageRestorer, progress: _Progress, data: bytes) -> Iterator[_Page]:
    """Opens the TIFF and checks its page count now (``progress.pages.total`` is set on return); the pages are
    decoded and restored one at a time as the returned iterator is read."""
    settings = restorer.settings
    with progress.stage("decode"):
        source = Image.open(io.BytesIO(data))
        try:
            total = source.n_frames
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"corrupt TIFF: its page directory cannot be read: {exc}")
        _check_page_count(total, settings.max_document_pages, "TIFF")
    progress.pages.total = total

    def pages() -> Iterator[_Page]:
        for index in range(total):
            with progress.stage("decode"):
                try:
                    source.seek(index)
                except (OSError, SyntaxError, ValueError, EOFError) as exc:
                    raise _page_error(index, total, exc)
                _check_page(index, total, source.width, source.height, settings.max_page_pixels)
                mode, info = source.mode, dict(source.info)
                photometric = source.tag_v2.get(262)
                try:
                    source.load()
                    image = frame_arrays(source, "TIFF")
                except (OSError, SyntaxError, ValueError, EOFError) as exc:
                    raise _page_error(index, total, exc)
            pixels = progress.restored(image, restorer)
            del image
            dpi = tuple(float(v) for v in info["dpi"]) if info.get("dpi") else None
            yield _Page(pixels, bilevel=mode == "1" and pixels.shape[2] == 1,
                        compression=info.get("compression") or "raw", dpi=dpi, photometric=photometric)

    return pages()


def _tiff_page(page: _Page, jpeg_quality: int) -> tuple[Image.Image, dict]:
    """The restored page as a Pillow image, and the TIFF options to save it with."""
    options: dict = {}
    if page.bilevel:
        image = to_bilevel(page.pixels)
        options["compression"] = _BILEVEL_COMPRESSION.get(page.compression, "group4")
        # Fax and records exports are usually min-is-white; libtiff stores the bits to match the tag.
        options["tiffinfo"] = {262: page.photometric if page.photometric in (0, 1) else 0}
        if options["compression"] in ("group3", "group4", "tiff_ccitt"):
            options["tiffinfo"][278] = image.height  # one strip: what fax readers and PDF embedding expect
    else:
        image = arrays_image(page.pixels, "TIFF")
        options["compression"] = _COMPRESSION.get(page.compression, "tiff_adobe_deflate")
        if options["compression"] == "jpeg":
            if image.mode not in ("L", "RGB"):
                options["compression"] = "tiff_adobe_deflate"
            else:
                options["quality"] = jpeg_quality
    if page.dpi:
        options["dpi"] = page.dpi
    return image, options


# --- PDF -----------------------------------------------------------------------------------------------------------
PageKind = Literal["image", "render", "born_digital"]
_PAINT = {"S", "s", "f", "F", "f*", "B", "B*", "b", "b*", "sh"}
_SHOW_TEXT = {"Tj", "TJ", "'", '"'}
SCAN_COVERAGE = 0.5  # an image over at least half the page is a scan; smaller ones are figures of a born-digital page


@dataclass
class PagePlan:
    kind: PageKind
    image_name: str | None = None
    reason: str = ""


def classify_page(page) -> PagePlan:
    """What a PDF page is, from its content stream: one scanned image (replace it in place), a scan with other
    visible content (render it), or born-digital (no page-sized image: leave it alone).

    Invisible text (render mode 3, the OCR layer OCRmyPDF and scanners add) does not count as content: a scan with
    its text layer is still replaced in place and keeps the layer."""
    import pikepdf

    xobjects = page.Resources.get("/XObject", {}) if "/Resources" in page.obj else {}
    box = page.cropbox if "/CropBox" in page.obj else page.mediabox
    page_area = abs(float(box[2]) - float(box[0])) * abs(float(box[3]) - float(box[1])) or 1.0
    ctm = np.eye(3)
    stack: list[tuple[np.ndarray, int]] = []
    render_mode = 0
    scans: list[str] = []
    other: list[str] = []
    try:
        instructions = pikepdf.parse_content_stream(page)
    except pikepdf.PdfError as exc:
        raise ImageDecodeError(f"content stream cannot be parsed: {exc}")
    for operands, operator in instructions:
        op = str(operator)
        if op == "q":
            stack.append((ctm.copy(), render_mode))
        elif op == "Q" and stack:
            ctm, render_mode = stack.pop()
        elif op == "cm" and len(operands) == 6:
            a, b, c, d, e, f = (float(v) for v in operands)
            ctm = np.array([[a, b, 0], [c, d, 0], [e, f, 1]]) @ ctm
        elif op == "Tr" and operands:
            render_mode = int(operands[0])
        elif op in _SHOW_TEXT and render_mode != 3:
            other.append("visible text")
        elif op in _PAINT:
            other.append("vector graphics")
        elif op == "INLINE IMAGE":
            other.append("an inline image")
        elif op == "Do" and operands:
            name = str(operands[0])
            xobject = xobjects.get(name)
            if xobject is None or xobject.get("/Subtype") != "/Image":
                other.append("a form")
                continue
            coverage = abs(np.linalg.det(ctm[:2, :2])) / page_area
            (scans if coverage >= SCAN_COVERAGE else other).append(name if coverage >= SCAN_COVERAGE else "a figure")
    if not scans:
        return PagePlan("born_digital", reason="no page-sized image")
    if len(scans) == 1 and not other and _replaceable(xobjects[scans[0]]):
        return PagePlan("image", image_name=scans[0])
    return PagePlan("render", reason=", ".join(dict.fromkeys(other)) or "an image that cannot be replaced in place")


def _classified(page, index: int, total: int, progress: _Progress) -> PagePlan:
    """classify_page for one page of a document, timed as decode; an unparsable page names its number."""
    with progress.stage("decode"):
        try:
            return classify_page(page)
        except ImageDecodeError as exc:
            raise _page_error(index, total, exc.message)


def _replaceable(xobject) -> bool:
    """Images we decode and re-encode in place: not stencil masks, no inverted /Decode, 8- or 1-bit."""
    if xobject.get("/ImageMask", False) or "/Decode" in xobject:
        return False
    return int(xobject.get("/BitsPerComponent", 8)) in (1, 8)


def _open_pdf(settings: Settings, progress: _Progress, data: bytes):
    """The PDF, its page count checked (``progress.pages.total`` set)."""
    import pikepdf

    with progress.stage("decode"):
        try:
            pdf = pikepdf.open(io.BytesIO(data))
        except pikepdf.PasswordError:
            raise UnsupportedImageError("the PDF is encrypted with a password; decrypt it first")
        except pikepdf.PdfError as exc:
            raise ImageDecodeError(f"corrupt PDF: {exc}")
        _check_page_count(len(pdf.pages), settings.max_document_pages, "PDF")
    progress.pages.total = len(pdf.pages)
    return pdf


def _restore_pdf(restorer: PageRestorer, progress: _Progress, data: bytes) -> bytes:
    """PDF in, PDF out: scans replaced in place, mixed pages rendered and replaced, born-digital pages untouched.

    qpdf keeps every replaced image in memory until the document is written, about the output's size; written to a
    temporary file and with every pikepdf object gone, that memory goes back to the system before the output is read
    back whole for its upload. Saved into memory instead, both copies were held at once (~0.9 MB a 200 dpi page
    more: bench/results/documents.md)."""
    return _written(lambda saved: _replace_pdf_pages(restorer, progress, data, saved))


def _written(write: Callable[[BinaryIO], None]) -> bytes:
    """What ``write`` writes into a temporary file, read back once the memory that writing held is given back.
    ``write`` must leave no object of its own alive: a pikepdf document keeps every image it was given until it is
    closed and dropped."""
    with tempfile.TemporaryFile(prefix="imgrestore-pdf-") as saved:
        write(saved)
        release_free_memory()
        saved.seek(0)
        return saved.read()


def _replace_pdf_pages(restorer: PageRestorer, progress: _Progress, data: bytes, saved: BinaryIO) -> None:
    """Restores the PDF's pages in place and writes the document to ``saved`` (a binary file)."""
    import pikepdf

    settings = restorer.settings
    pdf = _open_pdf(settings, progress, data)
    renderer = _Renderer(data, settings.pdf_render_dpi, settings.max_page_pixels)
    modes: list[str] = []
    with pdf:
        for index, page in enumerate(pdf.pages):
            mode = _restore_pdf_page(restorer, progress, pdf, page, index, renderer)
            if mode:
                modes.append(mode)
            # The page's arrays are freed: their heap pages would otherwise stay between the images qpdf keeps.
            release_free_memory()
        with progress.stage("encode"):
            try:
                pdf.save(saved, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.preserve)
            except pikepdf.PdfError as exc:
                raise ImageDecodeError(f"the restored PDF cannot be written (a damaged object in the input?): {exc}")
    renderer.close()
    progress.mode = "+".join(dict.fromkeys(modes))


def _restore_pdf_page(restorer: PageRestorer, progress: _Progress, pdf, page, index: int, renderer: "_Renderer"
                      ) -> str | None:
    """One page of a PDF restored in place; returns the mode written (None: nothing written, the page passed
    through or its scan was already restored for an earlier page)."""
    settings = restorer.settings
    total = progress.pages.total
    plan = _classified(page, index, total, progress)
    if plan.kind == "born_digital":
        progress.pages.passed_through += 1
        return None
    if plan.kind == "image":
        xobject = page.Resources.XObject[plan.image_name]
        key = xobject.objgen
        if key in progress.seen:  # the same scan drawn on several pages: restored once
            progress.pages.restored += 1
            return None
        progress.seen.add(key)
        image = _pdf_image(xobject, index, total, settings.max_page_pixels, progress)
        if image is not None:
            pixels = progress.restored(image, restorer)
            with progress.stage("encode"):
                return _replace_image(pdf, xobject, pixels, image, progress.job.options.jpeg_quality,
                                      settings.jpeg_quality)
        # pikepdf cannot decode this image (e.g. JBIG2): render the page instead
    with progress.stage("decode"):
        image = renderer.render(index, total, page)
    pixels = progress.restored(image, restorer)
    progress.pages.rendered += 1
    with progress.stage("encode"):
        return _replace_page(pdf, page, pixels)


def _pdf_pages(restorer: PageRestorer, progress: _Progress, data: bytes) -> Iterator[_Page]:
    """PDF in, pages out (to a TIFF, a page folder): a page's scan is restored at its own resolution; other pages
    are rendered at IMGRESTORE_PDF_RENDER_DPI, restored, or (born-digital) written as rendered and counted as passed
    through. A page's /Rotate is applied, so pages come out upright as a viewer shows them."""
    settings = restorer.settings
    pdf = _open_pdf(settings, progress, data)
    total = progress.pages.total
    renderer = _Renderer(data, settings.pdf_render_dpi, settings.max_page_pixels, replacing=False)

    def pages() -> Iterator[_Page]:
        with pdf:
            for index, page in enumerate(pdf.pages):
                plan = _classified(page, index, total, progress)
                rotate = int(page.obj.get("/Rotate", 0)) % 360
                image = None
                if plan.kind == "image":
                    xobject = page.Resources.XObject[plan.image_name]
                    image = _pdf_image(xobject, index, total, settings.max_page_pixels, progress)
                if image is not None:
                    pixels = progress.restored(image, restorer)
                    bilevel = image.source_mode == "1" and pixels.shape[2] == 1
                    yield _Page(_upright(pixels, rotate), bilevel, _pdf_compression(xobject),
                                _scan_dpi(page, image.width, image.height, rotate))
                    continue
                with progress.stage("decode"):
                    image = renderer.render(index, total, page)
                if plan.kind == "born_digital":
                    progress.pages.passed_through += 1
                    pixels = image.pixels
                else:
                    pixels = progress.restored(image, restorer)
                    progress.pages.rendered += 1
                yield _Page(pixels, False, "raw", (float(settings.pdf_render_dpi),) * 2)
        renderer.close()

    return pages()


def _pdf_compression(xobject) -> str:
    """A PDF scan's filter as the TIFF compression that keeps it: JPEG stays JPEG, CCITT stays Group 4, the rest
    (deflate, LZW, run-length…) becomes deflate."""
    filters = str(xobject.get("/Filter", ""))
    return "jpeg" if "/DCTDecode" in filters else "group4" if "/CCITTFaxDecode" in filters else "tiff_adobe_deflate"


def _upright(pixels: np.ndarray, rotate: int) -> np.ndarray:
    """A page's pixels turned as its /Rotate (clockwise degrees) shows them."""
    return np.ascontiguousarray(np.rot90(pixels, k=-(rotate // 90))) if rotate else pixels


def _scan_dpi(page, width: int, height: int, rotate: int) -> tuple[float, float]:
    """The resolution of a page-sized scan: its pixels over the page's visible box in inches (before /Rotate)."""
    box = page.cropbox if "/CropBox" in page.obj else page.mediabox
    inches_x, inches_y = abs(float(box[2]) - float(box[0])) / 72.0, abs(float(box[3]) - float(box[1])) / 72.0
    dpi = (round(width / inches_x, 2), round(height / inches_y, 2)) if inches_x and inches_y else (72.0, 72.0)
    return (dpi[1], dpi[0]) if rotate in (90, 270) else dpi


def _pdf_image(xobject, index: int, total: int, max_pixels: int, progress: _Progress) -> DecodedImage | None:
    """The scan of a page as arrays; None when pikepdf cannot decode its filter (the page is rendered instead)."""
    import pikepdf
    from pikepdf.models.image import UnsupportedImageTypeError

    with progress.stage("decode"):
        width, height = int(xobject.get("/Width", 0)), int(xobject.get("/Height", 0))
        _check_page(index, total, width, height, max_pixels, " (its scanned image)")
        try:
            pil = pikepdf.PdfImage(xobject).as_pil_image()
        except (UnsupportedImageTypeError, NotImplementedError, pikepdf.DependencyError) as exc:
            log.info("page image not decodable in place; rendering the page", extra={"page": index + 1, "why": str(exc)})
            return None
        except (pikepdf.PdfError, OSError, ValueError, zlib.error) as exc:
            raise _page_error(index, total, exc)
        try:
            image = frame_arrays(pil, "PDF")
        except (OSError, ValueError) as exc:
            raise _page_error(index, total, exc)
        if getattr(pil, "quantization", None):  # a JPEG scan: re-encode with its own tables (same quality)
            image.extra["qtables"] = pil.quantization
        return image


def _replace_image(pdf, xobject, pixels: np.ndarray, image: DecodedImage, jpeg_quality: int | None,
                   default_quality: int) -> str:
    """Writes the restored scan into the same image object: every page (and the text layer) that draws it keeps
    drawing it at the same place and size. Returns the mode written.

    A JPEG scan is written within the input scan's bytes (``_scan_within``) unless the job sets a quality; the
    service's IMGRESTORE_JPEG_QUALITY (95) would double a typical q75 scan."""
    import pikepdf

    was_jpeg = "/DCTDecode" in str(xobject.get("/Filter", ""))
    if image.source_mode == "1" and pixels.shape[2] == 1:
        data, params = _g4_strip(to_bilevel(pixels))
        xobject.write(data, filter=pikepdf.Name.CCITTFaxDecode, decode_parms=params)
        xobject.BitsPerComponent, xobject.ColorSpace, mode = 1, pikepdf.Name.DeviceGray, "1"
    else:
        page = arrays_image(pixels, "JPEG" if was_jpeg else "PNG")
        if page.mode == "I;16":
            page = Image.fromarray(to_uint8(pixels)[..., 0])
        gray = page.mode == "L"
        if was_jpeg:
            qtables = image.extra.get("qtables")
            if jpeg_quality is None and qtables and len(qtables) >= (1 if gray else 2):
                data, written = _scan_within(page, qtables, budget=len(xobject.read_raw_bytes()))
            else:
                data, written = _jpeg(page, quality=jpeg_quality or default_quality), "/DCTDecode"
            xobject.write(data, filter=pikepdf.Name(written))
        else:
            xobject.write(zlib.compress(page.tobytes(), 6), filter=pikepdf.Name.FlateDecode)
        if _icc_channels(xobject) != (1 if gray else 3):  # an ICC profile that still fits is kept
            xobject.ColorSpace = pikepdf.Name.DeviceGray if gray else pikepdf.Name.DeviceRGB
        xobject.BitsPerComponent, mode = 8, page.mode
    xobject.Width, xobject.Height = image.width, image.height
    return mode


# Factors on a JPEG scan's own quantization tables, tried in turn when the restored page does not fit the input's
# bytes: 2.0 takes a quality-75 scan to about quality 50.
_COARSER_TABLES = (1.25, 1.5, 2.0)


def _jpeg(page: Image.Image, qtables: dict | None = None, factor: float = 1.0, quality: int | None = None) -> bytes:
    """``page`` as JPEG (optimised Huffman tables and progressive: ~8 % smaller for the same pixels), with ``qtables``
    scaled by ``factor``, or at ``quality``."""
    buffer = io.BytesIO()
    if qtables is not None:
        scaled = {k: [min(255, max(1, round(v * factor))) for v in table] for k, table in dict(qtables).items()}
        page.save(buffer, format="JPEG", qtables=scaled, optimize=True, progressive=True)
    else:
        page.save(buffer, format="JPEG", quality=quality, optimize=True, progressive=True)
    return buffer.getvalue()


def _scan_within(page: Image.Image, qtables: dict, budget: int) -> tuple[bytes, str]:
    """A restored JPEG scan in at most ``budget`` bytes (the input scan's) where it can be: JPEG with the scanner's
    own tables; else lossless deflate when that fits (a cleaned page is mostly exact white); else JPEG with coarser
    tables, step by step down to about half the scanner's quality (the smallest is kept if even that is larger).
    Returns the data and its PDF filter."""
    data = _jpeg(page, qtables)
    if len(data) <= budget:
        return data, "/DCTDecode"
    flate = zlib.compress(page.tobytes(), 6)
    if len(flate) <= budget:
        return flate, "/FlateDecode"
    for factor in _COARSER_TABLES:
        data = _jpeg(page, qtables, factor)
        if len(data) <= budget:
            break
    return data, "/DCTDecode"


def _icc_channels(xobject) -> int | None:
    """Channels of an /ICCBased colour space (kept when the restored page has as many), else None."""
    import pikepdf

    space = xobject.get("/ColorSpace")
    if isinstance(space, pikepdf.Array) and len(space) == 2 and str(space[0]) == "/ICCBased":
        return int(space[1].get("/N", 0))
    return None


def _g4_strip(page: Image.Image) -> tuple[bytes, object]:
    """A 1-bit page as CCITT Group 4 data for a PDF image stream (Pillow/libtiff encode it as a one-strip TIFF)."""
    import pikepdf

    buffer = io.BytesIO()
    page.save(buffer, format="TIFF", compression="group4", tiffinfo={262: 0, 278: page.height})
    with Image.open(buffer) as tiff:
        offset, length = tiff.tag_v2[273][0], tiff.tag_v2[279][0]
    data = buffer.getvalue()[offset:offset + length]
    # min-is-white G4 with BlackIs1 false: 0 bits are black, as in the TIFF it came from.
    return data, pikepdf.Dictionary(K=-1, Columns=page.width, Rows=page.height, BlackIs1=False)


def _replace_page(pdf, page, pixels: np.ndarray) -> str:
    """A rendered page's content becomes its restored rendering, drawn over the page's visible box; annotations
    (links, form fields) and the page's own attributes stay."""
    import pikepdf

    stream, mode = _image_stream(pdf, pixels)
    box = page.cropbox if "/CropBox" in page.obj else page.mediabox
    x0, y0, x1, y1 = (float(v) for v in box)
    page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=stream))
    page.Contents = pdf.make_stream(f"q {x1 - x0:.4f} 0 0 {y1 - y0:.4f} {x0:.4f} {y0:.4f} cm /Im0 Do Q".encode())
    return mode


def _image_stream(pdf, pixels: np.ndarray, jpeg_quality: int | None = None):
    """Restored 8-bit gray or RGB pixels as a PDF image XObject: deflate, or JPEG at ``jpeg_quality`` when given.
    Returns (stream, mode)."""
    import pikepdf

    image = arrays_image(pixels, "JPEG" if jpeg_quality else "PNG")
    if image.mode == "I;16":
        image = Image.fromarray(to_uint8(pixels)[..., 0])
    if jpeg_quality:
        stream = pikepdf.Stream(pdf, _jpeg(image, quality=jpeg_quality))
        stream.Filter = pikepdf.Name.DCTDecode
    else:
        stream = pikepdf.Stream(pdf, zlib.compress(image.tobytes(), 6))
        stream.Filter = pikepdf.Name.FlateDecode
    stream.Type, stream.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
    stream.Width, stream.Height, stream.BitsPerComponent = image.width, image.height, 8
    stream.ColorSpace = pikepdf.Name.DeviceGray if image.mode == "L" else pikepdf.Name.DeviceRGB
    return stream, image.mode


class _Renderer:
    """pypdfium2, opened on first use only (most scanned PDFs never need it)."""

    def __init__(self, data: bytes, dpi: int, max_pixels: int, replacing: bool = True) -> None:
        self.data, self.dpi, self.max_pixels = data, dpi, max_pixels
        self.replacing = replacing  # the rendering replaces the page's content (PDF out), so /Rotate must be 0
        self._doc = None

    def render(self, index: int, total: int, page) -> DecodedImage:
        import pypdfium2

        if self.replacing and "/Rotate" in page.obj and int(page.obj.Rotate) % 360:
            raise UnsupportedImageError(
                f"page {index + 1} of {total} is rotated and is not a single scanned image; rotated pages that "
                "need rendering are not supported yet"
            )
        try:
            if self._doc is None:
                self._doc = pypdfium2.PdfDocument(self.data)
            pdfium_page = self._doc[index]
            width, height = pdfium_page.get_size()
            scale = self.dpi / 72.0
            _check_page(index, total, round(width * scale), round(height * scale), self.max_pixels,
                        f" (rendered at {self.dpi} dpi, IMGRESTORE_PDF_RENDER_DPI)")
            bitmap = pdfium_page.render(scale=scale, draw_annots=False, may_draw_forms=False)
            pil = bitmap.to_pil()
            bitmap.close()
            pdfium_page.close()
        except pypdfium2.PdfiumError as exc:
            raise _page_error(index, total, exc)
        if pil.mode not in ("L", "RGB"):
            pil = pil.convert("RGB")
        return frame_arrays(pil, "PDF")

    def close(self) -> None:
        if self._doc is not None:
            self._doc.close()
