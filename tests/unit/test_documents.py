"""Documents through the real restore path (tiny real ONNX models, local files): multi-page and Group 4 TIFFs,
scanned PDFs with and without text layers, born-digital pages, corrupt pages and the limits."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2
import pytest
from PIL import Image

from services.config import Settings
from services.errors import DocumentTooLargeError, ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from services.imaging.documents import (_jpeg, _scan_within, bilevel_threshold, document_kind, page_file_name,
                                        page_url)
from services.jobs import Job, derive_output_url, output_name
from services.restorer import Restorer
from tests.support.documents import bilevel, scan, scanned_pdf, tiff_bytes


def restore(settings: Settings, tmp_path: Path, name: str, data: bytes, **job_fields):
    source, target = tmp_path / name, tmp_path / "out" / name
    source.write_bytes(data)
    job = Job(task=job_fields.pop("task", "denoise"), profile=job_fields.pop("profile", "document"),
              input_url=str(source), output_url=str(target), **job_fields)
    return Restorer(settings).restore(job), target


def frames(data: bytes) -> list[dict]:
    image = Image.open(io.BytesIO(data))
    found = []
    for index in range(image.n_frames):
        image.seek(index)
        found.append({"mode": image.mode, "size": image.size, "compression": image.info.get("compression"),
                      "dpi": tuple(round(v) for v in image.info["dpi"]), "photometric": image.tag_v2.get(262),
                      "pixels": np.asarray(image.convert("L"))})
    return found


def test_three_page_mixed_tiff_comes_back_page_by_page(settings, tmp_path):
    pages = [Image.fromarray(scan(120, 90, 1)),
             Image.fromarray(np.dstack([scan(100, 140, 2), scan(100, 140, 3), scan(100, 140, 4)])),
             bilevel(160, 110, 5)]
    data = tiff_bytes(pages, ["tiff_lzw", "tiff_adobe_deflate", "group4"], dpi=(300, 300))
    done, target = restore(settings, tmp_path, "three.tif", data, profile="photo")

    written = frames(target.read_bytes())
    assert [f["size"] for f in written] == [(90, 120), (140, 100), (110, 160)]  # same order, same sizes
    assert [f["mode"] for f in written] == ["L", "RGB", "1"]
    assert [f["compression"] for f in written] == ["tiff_lzw", "tiff_adobe_deflate", "group4"]
    assert [f["photometric"] for f in written] == [1, 2, 1]
    assert all(f["dpi"] == (300, 300) for f in written)
    assert not np.array_equal(written[0]["pixels"], np.asarray(pages[0]))  # restored, not copied
    assert done.result.pages.model_dump() == {"total": 3, "restored": 3, "passed_through": 0, "rendered": 0}
    assert done.result.format == "TIFF" and done.result.bytes == len(target.read_bytes())
    assert done.timings.infer > 0 and done.timings.decode > 0 and done.timings.encode > 0


def test_group4_min_is_white_page_stays_group4_bilevel_and_compact(settings, tmp_path):
    page = bilevel(400, 300, 7)
    data = tiff_bytes([page], ["group4"], dpi=(200, 200), photometric=0)  # fax-style min-is-white
    assert document_kind(data) == "tiff"  # one bilevel page is a document: Group 4 must survive
    done, target = restore(settings, tmp_path, "fax.tif", data)

    [written] = frames(target.read_bytes())
    assert (written["mode"], written["compression"], written["photometric"], written["dpi"]) == \
        ("1", "group4", 0, (200, 200))
    # The tiny model is near the identity: thresholded back, the page keeps its ink where it was.
    agreement = np.mean((written["pixels"] > 0) == np.asarray(page))
    assert agreement > 0.97, agreement
    assert done.result.bytes <= 1.5 * len(data)  # compact, not 8-bit deflate (which is ~4× larger)


def test_bilevel_threshold_is_otsu_clamped_and_128_without_two_tones():
    two_tones = np.array([20] * 300 + [240] * 700, dtype=np.uint8)
    assert 96 <= bilevel_threshold(two_tones) <= 160
    assert bilevel_threshold(np.full(1000, 250, dtype=np.uint8)) == 128
    skewed = np.array([0] * 10 + [200] * 990, dtype=np.uint8)  # Otsu alone would split at 1
    assert bilevel_threshold(skewed) == 96


def pdf_images(data: bytes) -> list[dict]:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        found = []
        for page in pdf.pages:
            [(name, image)] = list(page.obj.Resources.XObject.items())
            filters = image.Filter if isinstance(image.Filter, pikepdf.Array) else [image.Filter]
            found.append({"filter": "+".join(str(f) for f in filters), "bpc": int(image.BitsPerComponent),
                          "size": (int(image.Width), int(image.Height)), "data": image.read_raw_bytes(),
                          "mediabox": [float(v) for v in page.mediabox]})
        return found


def rendered(data: bytes, index: int) -> np.ndarray:
    document = pypdfium2.PdfDocument(data)
    try:
        return np.asarray(document[index].render(scale=1).to_pil().convert("L"))
    finally:
        document.close()


def test_scanned_pdf_images_are_replaced_in_place_keeping_pages_bookmarks_and_metadata(settings, tmp_path):
    data = scanned_pdf()
    before = pdf_images(data)
    done, target = restore(settings, tmp_path, "scan.pdf", data)

    after = pdf_images(target.read_bytes())
    assert len(after) == 2
    for old, new in zip(before, after):
        assert (new["filter"], new["bpc"], new["size"], new["mediabox"]) == \
            (old["filter"], old["bpc"], old["size"], old["mediabox"])
    assert after[0]["data"] != before[0]["data"]  # the gray scan is restored (a clean G4 page may come back equal)
    # JPEG scans are written within the scan's own bytes (``_scan_within``).
    assert len(after[0]["data"]) <= len(before[0]["data"])
    assert after[1]["filter"] == "/CCITTFaxDecode" and after[1]["bpc"] == 1
    with pikepdf.open(target) as pdf:
        assert str(pdf.docinfo["/Title"]) == "Ledger 1931"
        assert pdf.open_metadata()["dc:title"] == "Ledger 1931"
        with pdf.open_outline() as outline:
            assert [item.title for item in outline.root] == ["Second page"]
    # The G4 page still shows its ink (not inverted): dark bars on a white page.
    page = rendered(target.read_bytes(), 1)
    assert page.mean() > 150 and (page < 60).mean() > 0.05
    assert done.result.pages.model_dump() == {"total": 2, "restored": 2, "passed_through": 0, "rendered": 0}
    assert done.result.format == "PDF"


def _jpeg_scan(pixels: np.ndarray) -> tuple[bytes, dict]:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue(), Image.open(io.BytesIO(buffer.getvalue())).quantization


def test_a_restored_jpeg_scan_keeps_the_scanners_tables_when_it_fits():
    page = Image.fromarray(scan(200, 160, 21))
    _, tables = _jpeg_scan(scan(200, 160, 21))
    data, written = _scan_within(page, tables, budget=10**6)
    assert written == "/DCTDecode" and data == _jpeg(page, tables)
    assert Image.open(io.BytesIO(data)).quantization == tables


def test_a_clean_page_that_jpeg_cannot_fit_is_written_lossless_when_deflate_fits():
    clean = np.full((400, 300), 255, np.uint8)
    clean[40:360:24, 30:270] = 0  # crisp black lines on exact white: costly in JPEG, cheap in deflate
    _, tables = _jpeg_scan(scan(400, 300, 22))
    budget = len(zlib.compress(clean.tobytes(), 6)) + 16
    assert len(_jpeg(Image.fromarray(clean), tables)) > budget  # the case: the scanner's tables do not fit
    data, written = _scan_within(Image.fromarray(clean), tables, budget)
    assert written == "/FlateDecode" and len(data) <= budget
    assert np.array_equal(np.frombuffer(zlib.decompress(data), np.uint8).reshape(clean.shape), clean)


def test_a_page_that_fits_neither_way_gets_coarser_tables_until_it_does():
    noisy = scan(300, 240, 23)
    first = _jpeg(Image.fromarray(noisy), _jpeg_scan(noisy)[1])
    budget = int(len(first) * 0.85)
    assert len(zlib.compress(noisy.tobytes(), 6)) > budget  # the case: nor does deflate
    data, written = _scan_within(Image.fromarray(noisy), _jpeg_scan(noisy)[1], budget)
    assert written == "/DCTDecode" and len(data) <= budget
    decoded = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
    assert np.abs(decoded - noisy).mean() < 12  # coarser, still the page


def _page_with(pdf: pikepdf.Pdf, content: bytes, image: Image.Image | None, size=(200, 250)) -> None:
    pdf.add_blank_page(page_size=size)
    page = pdf.pages[-1]
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    if image is not None:
        stream = pikepdf.Stream(pdf, image.tobytes())
        stream.Type, stream.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
        stream.Width, stream.Height = image.width, image.height
        stream.ColorSpace, stream.BitsPerComponent = pikepdf.Name.DeviceGray, 8
        resources.XObject = pikepdf.Dictionary(Im0=stream)
    page.obj.Resources = resources
    page.obj.Contents = pdf.make_stream(content)


def page_text(data: bytes, index: int) -> str:
    document = pypdfium2.PdfDocument(data)
    try:
        return document[index].get_textpage().get_text_range()
    finally:
        document.close()


def test_text_layer_survives_born_digital_passes_through_and_mixed_pages_are_rendered(settings, tmp_path):
    pdf = pikepdf.new()
    picture = Image.fromarray(scan(250, 200, 21))
    # 1: a scan with an invisible OCR layer (render mode 3) → image replaced in place, text kept.
    _page_with(pdf, b"q 200 0 0 250 0 0 cm /Im0 Do Q BT 3 Tr /F1 12 Tf 20 200 Td (Invoice 4711) Tj ET", picture)
    # 2: born-digital: visible text and a rule, no image → untouched.
    born = b"BT /F1 14 Tf 20 200 Td (Annual report) Tj ET 0 0 1 RG 20 180 m 180 180 l S"
    _page_with(pdf, born, None)
    # 3: a scan with a visible stamp over it → rendered, restored, redrawn.
    _page_with(pdf, b"q 200 0 0 250 0 0 cm /Im0 Do Q BT /F1 18 Tf 30 30 Td (PAID) Tj ET", picture)
    source = io.BytesIO()
    pdf.save(source)
    data = source.getvalue()

    done, target = restore(settings, tmp_path, "mixed.pdf", data)
    out = target.read_bytes()
    assert done.result.pages.model_dump() == {"total": 3, "restored": 2, "passed_through": 1, "rendered": 1}
    assert "Invoice 4711" in page_text(out, 0)
    with pikepdf.open(io.BytesIO(out)) as result, pikepdf.open(io.BytesIO(data)) as original:
        assert len(result.pages) == 3
        assert result.pages[1].obj.Contents.read_bytes() == original.pages[1].obj.Contents.read_bytes()
        first = result.pages[0].obj.Resources.XObject.Im0
        assert first.read_bytes() != original.pages[0].obj.Resources.XObject.Im0.read_bytes()
        third = result.pages[2].obj
        assert list(third.Resources.XObject.keys()) == ["/Im0"] and "Do" in third.Contents.read_bytes().decode()
        assert [float(v) for v in result.pages[2].mediabox] == [0, 0, 200, 250]
    assert "Annual report" in page_text(out, 1)


def corrupt_second_page(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.seek(1)
    offset, length = image.tag_v2[273][0], image.tag_v2[279][0]
    broken = bytearray(data)
    broken[offset:offset + length] = bytes(range(256)) * (length // 256) + bytes(length % 256)
    return bytes(broken)


def test_corrupt_page_fails_the_document_with_its_number_and_writes_nothing(settings, tmp_path):
    pages = [Image.fromarray(scan(80, 60, s)) for s in range(3)]
    data = corrupt_second_page(tiff_bytes(pages, ["tiff_adobe_deflate"] * 3))
    with pytest.raises(ImageDecodeError, match="page 2 of 3"):
        restore(settings, tmp_path, "broken.tif", data)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_corrupt_pdf_image_names_the_page(settings, tmp_path):
    pdf = pikepdf.open(io.BytesIO(scanned_pdf(with_outline=False)))
    image = pdf.pages[1].obj.Resources.XObject
    [name] = list(image.keys())
    image[name].write(b"\x00garbage" * 50, filter=pikepdf.Name.FlateDecode)
    out = io.BytesIO()
    pdf.save(out)
    with pytest.raises(ImageDecodeError, match="page 2 of 2"):
        restore(settings, tmp_path, "broken.pdf", out.getvalue())
    assert not (tmp_path / "out" / "broken.pdf").exists()


def test_page_and_pixel_limits_fail_early_with_the_setting_named(tiny_model_dir, tmp_path):
    pages = [Image.fromarray(scan(80, 60, s)) for s in range(3)]
    data = tiff_bytes(pages, ["tiff_lzw"] * 3)
    with pytest.raises(DocumentTooLargeError, match="IMGRESTORE_MAX_DOCUMENT_PAGES"):
        restore(Settings(model_dir=tiny_model_dir, max_document_pages=2), tmp_path, "long.tif", data)
    with pytest.raises(ImageTooLargeError, match=r"page 1 of 3.*IMGRESTORE_MAX_PAGE_PIXELS"):
        restore(Settings(model_dir=tiny_model_dir, max_page_pixels=1000), tmp_path, "big.tif", data)
    assert not (tmp_path / "out").exists()


def test_a_single_image_format_is_refused_for_several_pages_but_writes_a_one_page_document(settings, tmp_path):
    data = tiff_bytes([Image.fromarray(scan(40, 40, s)) for s in range(2)], ["tiff_lzw"] * 2)
    with pytest.raises(UnsupportedImageError, match="2 pages and png holds one image: ask for png-pages"):
        restore(settings, tmp_path, "two.tif", data, options={"output_format": "png"})
    assert not (tmp_path / "out").exists()
    fax = tiff_bytes([bilevel(120, 90, 3)], ["group4"], dpi=(200, 200))  # one bilevel page: a document
    done, target = restore(settings, tmp_path, "fax.png", fax, options={"output_format": "png"})
    with Image.open(target) as page:
        assert (page.format, page.mode, page.size) == ("PNG", "1", (90, 120))
    assert done.result.format == "PNG" and done.result.pages.total == 1


def test_document_formats_are_refused_for_single_images(settings, tmp_path):
    out = io.BytesIO()
    Image.fromarray(scan(40, 40)).save(out, format="PNG")
    for fmt in ("pdf", "png-pages"):
        with pytest.raises(UnsupportedImageError, match=f"output format {fmt} is for documents"):
            restore(settings, tmp_path, "page.png", out.getvalue(), options={"output_format": fmt})
    assert not (tmp_path / "out").exists()


def test_pdf_comes_out_as_a_multipage_tiff_keeping_resolution_and_compression(settings, tmp_path):
    done, target = restore(settings, tmp_path, "ledger.tif", scanned_pdf(), options={"output_format": "tiff"})
    written = frames(target.read_bytes())
    # img2pdf page 1: JPEG gray 240×300 at 150 dpi; page 2: Group 4 250×330 at 200 dpi.
    assert [(f["mode"], f["size"], f["compression"], f["dpi"]) for f in written] == \
        [("L", (240, 300), "jpeg", (150, 150)), ("1", (250, 330), "group4", (200, 200))]
    assert (written[1]["pixels"] < 128).mean() > 0.05  # ink still dark, not inverted
    assert done.result.format == "TIFF" and done.result.mode == "L+1"
    assert done.result.pages.model_dump() == {"total": 2, "restored": 2, "passed_through": 0, "rendered": 0}


def test_tiff_comes_out_as_a_pdf_with_pages_sized_from_their_dpi(settings, tmp_path):
    pages = [Image.fromarray(scan(120, 90, 1)),
             Image.fromarray(np.dstack([scan(100, 140, 2), scan(100, 140, 3), scan(100, 140, 4)])),
             bilevel(160, 110, 5)]
    data = tiff_bytes(pages, ["tiff_lzw", "jpeg", "group4"], dpi=(200, 200))
    done, target = restore(settings, tmp_path, "three.pdf", data, profile="photo", options={"output_format": "pdf"})
    images = pdf_images(target.read_bytes())
    assert [(i["filter"], i["bpc"], i["size"]) for i in images] == \
        [("/FlateDecode", 8, (90, 120)), ("/DCTDecode", 8, (140, 100)), ("/CCITTFaxDecode", 1, (110, 160))]
    assert [i["mediabox"] for i in images] == [[0, 0, 32.4, 43.2], [0, 0, 50.4, 36.0], [0, 0, 39.6, 57.6]]
    page = rendered(target.read_bytes(), 2)  # the Group 4 page shows dark bars on white
    assert page.mean() > 150 and (page < 60).mean() > 0.05
    assert done.result.format == "PDF" and done.result.pages.restored == 3


def test_pdf_comes_out_as_a_folder_of_page_images_with_born_digital_pages_rendered(settings, tmp_path):
    pdf = pikepdf.new()
    picture = Image.fromarray(scan(250, 200, 21))
    _page_with(pdf, b"q 200 0 0 250 0 0 cm /Im0 Do Q", picture)  # a scan at 72 dpi
    _page_with(pdf, b"BT /F1 14 Tf 20 200 Td (Annual report) Tj ET", None)  # born-digital
    source = io.BytesIO()
    pdf.save(source)
    settings = settings.model_copy(update={"pdf_render_dpi": 144})
    done, target = restore(settings, tmp_path, "report", source.getvalue(), options={"output_format": "png-pages"})

    assert sorted(p.name for p in target.iterdir()) == ["page-0001.png", "page-0002.png"]
    with Image.open(target / "page-0001.png") as first, Image.open(target / "page-0002.png") as second:
        assert (first.size, round(first.info["dpi"][0])) == ((200, 250), 72)
        assert (second.size, round(second.info["dpi"][0])) == ((400, 500), 144)  # rendered at the render DPI
        assert np.asarray(second.convert("L")).min() < 100  # the text is drawn
    assert done.result.format == "PNG-PAGES"
    assert done.result.pages.model_dump() == {"total": 2, "restored": 1, "passed_through": 1, "rendered": 0}
    assert done.result.bytes == sum(p.stat().st_size for p in target.iterdir())


def test_a_corrupt_page_leaves_no_page_files(settings, tmp_path):
    pages = [Image.fromarray(scan(80, 60, s)) for s in range(3)]
    data = corrupt_second_page(tiff_bytes(pages, ["tiff_adobe_deflate"] * 3))
    with pytest.raises(ImageDecodeError, match="page 2 of 3"):
        restore(settings, tmp_path, "broken", data, options={"output_format": "tiff-pages"})
    assert not (tmp_path / "out").exists()


def test_page_folder_names_follow_the_output_naming_rule():
    assert output_name("1931/ledger.pdf", "png-pages") == "1931/ledger"
    assert output_name("fax.tif", "pdf") == "fax.pdf"
    assert derive_output_url("s3://b/in/ledger.pdf", "denoise", "document", "jpeg-pages") == \
        "s3://b/in/restored/denoise-document/ledger"
    assert page_url("s3://b/out/ledger/", 0, 12, "JPEG-PAGES") == "s3://b/out/ledger/page-0001.jpg"
    assert page_file_name(11999, 12000, "TIFF-PAGES") == "page-12000.tif"


def test_single_page_gray_tiff_still_takes_the_single_image_path():
    out = io.BytesIO()
    Image.fromarray(scan(40, 40)).save(out, format="TIFF")
    assert document_kind(out.getvalue()) is None
    assert document_kind(b"%PDF-1.7\n...") == "pdf"


_MEASURE = """
import json, sys
sys.path.insert(0, {repo!r})
from services.config import Settings
from services.jobs import Job
from services.restorer import Restorer
restorer = Restorer(Settings(model_dir={models!r}, max_document_pages=1000, tile_size=512))
done = restorer.restore(Job(task="denoise", profile="document", input_url={source!r}, output_url={target!r}))
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"peak_kb": hwm, "pages": done.result.pages.total}}))
"""


def _peak_mib(tiny_model_dir: Path, source: Path, target: Path) -> tuple[float, int]:
    """Peak RSS of a fresh process that restores ``source`` (a document) into ``target``, and the pages it restored."""
    import json
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parents[2])
    code = _MEASURE.format(repo=repo, models=str(tiny_model_dir), source=str(source), target=str(target))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["peak_kb"] / 1024, measured["pages"]


@pytest.mark.slow
def test_memory_is_flat_in_page_count_for_a_500_page_document(tiny_model_dir, tmp_path):
    """Pages are decoded, restored and encoded one at a time: 500 pages peak where 20 do (plus the compressed
    documents, a few KiB a page here)."""
    from PIL import TiffImagePlugin

    peaks = {}
    for count in (20, 500):
        source, target = tmp_path / f"in-{count}.tif", tmp_path / f"out-{count}.tif"
        with open(source, "w+b") as fh, TiffImagePlugin.AppendingTiffWriter(fh, new=True) as writer:
            for seed in range(count):  # 0.075 MP bilevel pages (one tile each), ~1 KiB compressed
                bilevel(300, 250, seed % 7).save(writer, format="TIFF", compression="group4")
                writer.newFrame()
        peaks[count], pages = _peak_mib(tiny_model_dir, source, target)
        assert pages == count and Image.open(target).n_frames == count
    # Holding 480 more decoded pages would take ~72 MB (gray input and output arrays); allow the compressed
    # documents (~1 MB) and allocator noise.
    assert peaks[500] - peaks[20] < 15, peaks


@pytest.mark.slow
def test_a_pdf_holds_its_restored_images_once(tiny_model_dir, tmp_path):
    """PDF in place: qpdf keeps every replaced image until the document is written. Written into memory, that was a
    second copy of the output beside the written one (~0.9 MB a 200 dpi page in bench/documents.py); now memory less
    the two documents (held whole for the upload) is flat in page count."""
    import img2pdf

    held = {}
    for count in (10, 160):
        def jpegs():
            for seed in range(count):  # noisy 0.48 MP gray JPEG scans, ~250 KB each
                out = io.BytesIO()
                Image.fromarray(scan(800, 600, seed % 5)).save(out, format="JPEG", quality=92, dpi=(100, 100))
                yield out.getvalue()

        source, target = tmp_path / f"in-{count}.pdf", tmp_path / f"out-{count}.pdf"
        source.write_bytes(img2pdf.convert(list(jpegs())))
        peak, pages = _peak_mib(tiny_model_dir, source, target)
        assert pages == count and len(pikepdf.open(target).pages) == count
        held[count] = peak - (source.stat().st_size + target.stat().st_size) / 2**20
    # Before: +28 MB at 160 pages (the output, ~28 MB, held twice); now +2 MB.
    assert held[160] - held[10] < 8, held


def test_rotated_pdf_pages_come_out_upright_in_a_tiff(settings, tmp_path):
    pdf = pikepdf.new()
    picture = Image.fromarray(scan(250, 200, 31))
    _page_with(pdf, b"q 200 0 0 250 0 0 cm /Im0 Do Q", picture)  # a scan, shown turned a quarter clockwise
    _page_with(pdf, b"BT /F1 14 Tf 20 200 Td (Annual report) Tj ET", None)  # born-digital, also turned
    for page in pdf.pages:
        page.obj.Rotate = 90
    source = io.BytesIO()
    pdf.save(source)
    settings = settings.model_copy(update={"pdf_render_dpi": 72})
    done, target = restore(settings, tmp_path, "turned.tif", source.getvalue(), options={"output_format": "tiff"})
    written = frames(target.read_bytes())
    assert [f["size"] for f in written] == [(250, 200), (250, 200)]  # landscape, as a viewer shows them
    shown = rendered(source.getvalue(), 0)  # pdfium applies /Rotate as a viewer does; the tiny model is near identity
    assert shown.shape == written[0]["pixels"].shape
    assert np.mean((shown < 100) == (written[0]["pixels"] < 100)) > 0.95  # turned the same way, not mirrored
    assert done.result.pages.model_dump() == {"total": 2, "restored": 1, "passed_through": 1, "rendered": 0}
