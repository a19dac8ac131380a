"""The status page in a real headless Chromium: it renders the API's jobs and batches with loaded thumbnails.

Chromium is driven through its own command line (``--dump-dom`` and ``--screenshot`` with a virtual-time budget,
which lets the page's fetches, image loads and timers run before the snapshot): no browser-automation dependency.
The token travels in the URL fragment, which the browser never sends; the test checks the server never saw it.
Set IMGRESTORE_UPDATE_SCREENSHOT=1 to refresh the copy in services/api/ui-screenshot.png (used by the README).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.api_server import start_api

TOKEN = f"ui-{uuid.uuid4().hex}"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_COPY = Path(__file__).resolve().parents[2] / "services" / "api" / "ui-screenshot.png"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")


class _Dom(HTMLParser):
    """Rows of the dumped DOM: each <tr> with its attributes, text and <img> attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.elements: list[tuple[str, dict]] = []
        self._row: dict | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        if tag == "tr":
            self._row = {"attrs": attributes, "text": "", "imgs": []}
            self.rows.append(self._row)
        elif tag == "img" and self._row is not None:
            self._row["imgs"].append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self._row["text"] += data


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def _png(width: int, height: int, seed: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    pixels = np.stack([x * 255 // width, y * 255 // height, rng.integers(0, 255, (height, width))], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ui_service(service_env, worker, s3_client, tmp_path_factory):
    bucket = f"ui-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    env = {**service_env, "IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "ui-tests",
                                                                        "allow": [f"s3://{bucket}/"]}})}
    server = start_api(env, tmp_path_factory.mktemp("ui-api"))
    yield server, bucket
    server.stop()


def _wait(http: httpx.Client, path: str, done, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(path).json()
        if done(body):
            return body
        time.sleep(0.2)
    raise TimeoutError(f"{path}: {body}")


def test_status_page_renders_jobs_batches_and_thumbnails(ui_service, s3_client, tmp_path):
    server, bucket = ui_service
    s3_client.put_object(Bucket=bucket, Key="in/landscape.png", Body=_png(240, 160, 1))
    s3_client.put_object(Bucket=bucket, Key="in/portrait.png", Body=_png(120, 180, 2))
    s3_client.put_object(Bucket=bucket, Key="in/broken.png", Body=b"definitely not a png")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        good = http.post("/v1/jobs", json={"task": "watermark", "input_url": f"s3://{bucket}/in/landscape.png"})
        bad = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{bucket}/in/broken.png"})
        batch = http.post("/v1/batches", json={"task": "colorize", "inputs": [
            f"s3://{bucket}/in/landscape.png", f"s3://{bucket}/in/portrait.png"],
            "output_prefix": f"s3://{bucket}/colorized/"})
        assert good.status_code == bad.status_code == batch.status_code == 201
        good_id, bad_id, batch_id = good.json()["id"], bad.json()["id"], batch.json()["id"]
        _wait(http, f"/v1/jobs/{good_id}", lambda j: j["state"] == "succeeded")
        _wait(http, f"/v1/jobs/{bad_id}", lambda j: j["state"] == "failed")
        _wait(http, f"/v1/batches/{batch_id}", lambda b: b["state"] == "finished")

    page = f"{server.url}/ui#token={TOKEN}"
    budget = "--virtual-time-budget=10000"
    dump = _chromium(budget, "--dump-dom", page, profile=tmp_path / "profile-dom")
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = _Dom()
    dom.feed(dump.stdout)

    jobs = {row["attrs"]["data-job-id"]: row for row in dom.rows if "data-job-id" in row["attrs"]}
    batches = {row["attrs"]["data-batch-id"]: row for row in dom.rows if "data-batch-id" in row["attrs"]}
    assert good_id in jobs and bad_id in jobs and len(jobs) == 4, sorted(jobs)  # 2 single jobs + 2 of the batch
    assert jobs[good_id]["attrs"]["data-state"] == "succeeded" and "watermark" in jobs[good_id]["text"]
    assert jobs[bad_id]["attrs"]["data-state"] == "failed" and "image_decode" in jobs[bad_id]["text"]
    assert batches[batch_id]["attrs"]["data-state"] == "finished" and "100%" in batches[batch_id]["text"]

    thumbs = {img["data-which"]: img for img in jobs[good_id]["imgs"]}
    for which in ("input", "output"):
        img = thumbs[which]
        assert img["data-loaded"] == "true", img  # the <img> really loaded a decodable image
        assert img["src"].startswith("blob:")  # fetched with the Bearer header, not via a URL with a token
        assert (int(img["data-natural-width"]), int(img["data-natural-height"])) == (144, 96)
    # Its input is no image and it has no output: words, not <img>s that browsers draw as broken images.
    assert jobs[bad_id]["imgs"] == [] and "no preview" in jobs[bad_id]["text"]
    assert any(attrs.get("data-job-id") == bad_id and attrs.get("data-loaded") == "error"
               for tag, attrs in dom.elements if tag == "span")
    assert not any(TOKEN in json.dumps(attrs) for _, attrs in dom.elements)
    status = next(attrs for tag, attrs in dom.elements if attrs.get("id") == "status")
    assert "error" not in status.get("class", "")

    shot = tmp_path / "ui.png"
    result = _chromium(budget, "--window-size=1280,900", f"--screenshot={shot}", page,
                       profile=tmp_path / "profile-shot")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot)
    assert image.size == (1280, 900)
    assert np.asarray(image.convert("L")).std() > 10  # rendered content, not a blank page
    if os.environ.get("IMGRESTORE_UPDATE_SCREENSHOT"):
        image.convert("RGB").quantize(64).save(SCREENSHOT_COPY, optimize=True)

    log = server.log()
    assert TOKEN not in log  # neither the fragment nor the header reached the server's logs
    assert '"route": "/v1/jobs/{job_id}/thumbnail/{which}"' in log and '"principal": "ui-tests"' in log
