"""How S3 errors read, from the error code any S3-compatible endpoint sends (a botocore Stubber answers: no
network). Issue 10, bug 8: a missing bucket was reported as "access refused (NoSuchBucket)"."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from services.config import Settings
from services.errors import StorageAccessError
from services.storage import S3Storage

# Another endpoint's wording: the code is what S3-compatible stores agree on, the message is theirs.
GATEWAY_MESSAGE = "Le compartiment demandé est introuvable"


@pytest.fixture()
def storage() -> S3Storage:
    return S3Storage(Settings(s3_endpoint_url="http://127.0.0.1:9", s3_access_key_id="k",
                              s3_secret_access_key="s"))


@pytest.mark.parametrize("operation, call", [
    ("get_object", lambda s: s.read("s3://scans-2024/in/p1.png")),
    ("list_objects_v2", lambda s: list(s.list("s3://scans-2024/in/"))),
])
def test_a_missing_bucket_is_named_as_missing(storage, operation, call):
    with Stubber(storage.client) as stub:
        stub.add_client_error(operation, service_error_code="NoSuchBucket", service_message=GATEWAY_MESSAGE,
                              http_status_code=404)
        with pytest.raises(StorageAccessError, match="bucket 'scans-2024' does not exist") as raised:
            call(storage)
    assert "access refused" not in str(raised.value)


def test_access_denied_still_reads_as_refused(storage):
    with Stubber(storage.client) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", service_message="Access Denied",
                              http_status_code=403)
        with pytest.raises(StorageAccessError, match="access refused by the store \\(AccessDenied\\)"):
            storage.read("s3://scans-2024/in/p1.png")
