"""Documents everywhere a job runs: a real worker with moto's S3 server, a PDF backfill, and `imgrestore run`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pikepdf
from PIL import Image

from services.jobs import JobRequest, JobState
from tests.support.documents import bilevel, scan, scanned_pdf, tiff_bytes
from tests.support.processes import REPO


def _key(url: str) -> str:
    return url.split("/", 3)[3]


def test_queued_pdf_and_tiff_jobs_through_a_worker_and_s3(worker, submitter, s3_client, bucket):
    pdf = scanned_pdf()
    tiff = tiff_bytes([Image.fromarray(scan(90, 70, 1)), bilevel(120, 80, 2)], ["tiff_lzw", "group4"], dpi=(240, 240))
    broken = bytearray(tiff_bytes([Image.fromarray(scan(60, 50, s)) for s in range(3)], ["tiff_adobe_deflate"] * 3))
    third = Image.open(io.BytesIO(bytes(broken)))
    third.seek(2)
    offset, length = third.tag_v2[273][0], third.tag_v2[279][0]
    broken[offset:offset + length] = b"\xff" * length
    for key, body in [("docs/ledger.pdf", pdf), ("docs/fax.tif", tiff), ("docs/broken.tif", bytes(broken))]:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    jobs = {name: submitter.submit(JobRequest(task="denoise", profile="document",
                                              input_url=f"s3://{bucket}/docs/{name}"))
            for name in ("ledger.pdf", "fax.tif", "broken.tif")}

    ledger = submitter.wait(jobs["ledger.pdf"].id, timeout=120)
    assert ledger.state is JobState.succeeded, ledger.error
    assert ledger.result.format == "PDF" and ledger.result.pages.model_dump() == \
        {"total": 2, "restored": 2, "passed_through": 0, "rendered": 0}
    assert ledger.timings.infer > 0 and ledger.timings.upload is not None
    head = s3_client.head_object(Bucket=bucket, Key=_key(ledger.output_url))
    assert head["ContentType"] == "application/pdf" and ledger.output_url.endswith("/restored/denoise-document/ledger.pdf")
    body = s3_client.get_object(Bucket=bucket, Key=_key(ledger.output_url))["Body"].read()
    with pikepdf.open(io.BytesIO(body)) as restored:
        assert len(restored.pages) == 2 and str(restored.docinfo["/Title"]) == "Ledger 1931"

    fax = submitter.wait(jobs["fax.tif"].id, timeout=120)
    assert fax.state is JobState.succeeded, fax.error
    out = Image.open(io.BytesIO(s3_client.get_object(Bucket=bucket, Key=_key(fax.output_url))["Body"].read()))
    assert out.n_frames == 2
    out.seek(1)
    assert (out.mode, out.info["compression"], tuple(round(v) for v in out.info["dpi"])) == ("1", "group4", (240, 240))

    failed = submitter.wait(jobs["broken.tif"].id, timeout=120)
    assert failed.state is JobState.failed and failed.error.type == "image_decode"
    assert "page 3 of 3" in failed.error.message
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="docs/restored/")
    assert sorted(_key("s3://b/" + o["Key"]).rsplit("/", 1)[-1] for o in listed.get("Contents", [])) == \
        ["fax.tif", "ledger.pdf"]  # nothing half-written for the broken one
    assert worker.alive()


def test_a_queued_pdf_written_as_page_images_under_an_s3_prefix(worker, submitter, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="docs/ledger.pdf", Body=scanned_pdf())
    job = submitter.submit(JobRequest(task="denoise", profile="document", input_url=f"s3://{bucket}/docs/ledger.pdf",
                                      options={"output_format": "png-pages"}))
    done = submitter.wait(job.id, timeout=120)
    assert done.state is JobState.succeeded, done.error
    assert done.output_url == f"s3://{bucket}/docs/restored/denoise-document/ledger"
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="docs/restored/denoise-document/ledger/")
    assert [o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]] == ["page-0001.png", "page-0002.png"]
    head = s3_client.head_object(Bucket=bucket, Key="docs/restored/denoise-document/ledger/page-0002.png")
    assert head["ContentType"] == "image/png"
    body = s3_client.get_object(Bucket=bucket, Key="docs/restored/denoise-document/ledger/page-0002.png")["Body"]
    assert Image.open(io.BytesIO(body.read())).mode == "1"  # the Group 4 page stays bilevel
    assert done.result.format == "PNG-PAGES" and done.result.pages.restored == 2


def test_pdf_backfill_with_include_patterns(make_service, s3_client, bucket):
    service = make_service(workers=1)
    s3_client.put_object(Bucket=bucket, Key="archive/1931/ledger.pdf", Body=scanned_pdf())
    s3_client.put_object(Bucket=bucket, Key="archive/1931/fax.tif",
                         Body=tiff_bytes([bilevel(100, 80, s) for s in range(2)], ["group4"] * 2))
    s3_client.put_object(Bucket=bucket, Key="archive/1931/notes.txt", Body=b"not a document")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "backfill", "--task", "denoise", "--profile", "document",
         f"s3://{bucket}/archive/", "--output", f"s3://{bucket}/clean/", "--include", "*.pdf,*.tif",
         "--report", str(service.log_dir / "failures.jsonl")],
        env={**os.environ, **service.env}, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="clean/")
    assert sorted(o["Key"] for o in listed["Contents"]) == ["clean/1931/fax.tif", "clean/1931/ledger.pdf"]
    body = s3_client.get_object(Bucket=bucket, Key="clean/1931/ledger.pdf")["Body"].read()
    with pikepdf.open(io.BytesIO(body)) as restored:
        assert len(restored.pages) == 2


def test_imgrestore_run_on_a_folder_of_documents(tmp_path, tiny_model_dir):
    src = tmp_path / "archive"
    src.mkdir()
    (src / "ledger.pdf").write_bytes(scanned_pdf())
    (src / "three.tif").write_bytes(tiff_bytes([Image.fromarray(scan(70, 50, s)) for s in range(3)], ["tiff_lzw"] * 3))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMGRESTORE_", "AWS_"))}
    result = subprocess.run([sys.executable, "-m", "services.cli", "run", "--task", "denoise", "--profile", "document",
                             "--json", str(src), "-o", str(tmp_path / "out")],
                            env={**clean, "IMGRESTORE_MODEL_DIR": str(tiny_model_dir)}, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["succeeded"] == 2
    assert len(pikepdf.open(tmp_path / "out" / "ledger.pdf").pages) == 2
    assert Image.open(tmp_path / "out" / "three.tif").n_frames == 3
