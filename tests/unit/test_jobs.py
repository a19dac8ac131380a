import pytest
from pydantic import ValidationError

from services.jobs import Job, JobOptions, JobRequest, Profile, Task, derive_output_url


def test_output_url_is_deterministic_and_next_to_the_input():
    assert derive_output_url("s3://b/scans/p1.png", Task.denoise, Profile.document) == \
        "s3://b/scans/restored/denoise-document/p1.png"
    assert derive_output_url("/data/p1.tif", "colorize") == "/data/restored/colorize/p1.tif"
    assert derive_output_url("s3://b/a.png", "watermark", output_format="jpg") == "s3://b/restored/watermark/a.jpg"
    assert derive_output_url("s3://b/a.gif", "watermark") == "s3://b/restored/watermark/a.png"
    request = JobRequest(task="denoise", input_url="s3://b/x.png")
    assert Job.from_request(request).output_url == Job.from_request(request).output_url


def test_states_and_options_are_validated():
    with pytest.raises(ValidationError):
        JobRequest(task="sharpen", input_url="s3://b/x.png")
    with pytest.raises(ValidationError):
        JobOptions(output_format="heic")
    with pytest.raises(ValidationError):
        JobOptions(surprise=1)
    assert JobOptions(output_format="jpg").output_format == "JPEG"
