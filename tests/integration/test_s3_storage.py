"""S3Storage against a real S3-compatible HTTP server (moto), and against nothing at all."""

from __future__ import annotations

import pytest

from services.config import Settings
from services.errors import InputNotFoundError, StorageAccessError, TransientStorageError
from services.storage import S3Storage, StorageRouter


@pytest.fixture()
def storage(s3_endpoint) -> S3Storage:
    return S3Storage(Settings(s3_endpoint_url=s3_endpoint, s3_multipart_threshold_mb=5, s3_multipart_chunksize_mb=5))


def test_roundtrip_and_multipart_for_large_objects(storage, s3_client, bucket):
    storage.write(f"s3://{bucket}/small.bin", b"hello", "application/octet-stream")
    assert storage.read(f"s3://{bucket}/small.bin") == b"hello"
    big = bytes(range(256)) * (12 * 1024 * 1024 // 256)  # 12 MiB, over the 5 MiB threshold
    storage.write(f"s3://{bucket}/big.bin", big)
    head = s3_client.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(big)
    assert head["ETag"].strip('"').endswith("-3")  # completed as one object from three parts
    assert storage.read(f"s3://{bucket}/big.bin") == big


def test_listing_pages_through_more_than_one_page(storage, s3_client, bucket):
    for i in range(1105):
        s3_client.put_object(Bucket=bucket, Key=f"many/{i:05d}.png", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="other/z.png", Body=b"x")
    listed = list(storage.list(f"s3://{bucket}/many/"))
    assert len(listed) == 1105 and listed[0].url == f"s3://{bucket}/many/00000.png" and listed[0].etag


def test_errors_are_classified(storage, bucket, s3_endpoint):
    with pytest.raises(InputNotFoundError, match="no such object"):
        storage.read(f"s3://{bucket}/missing.png")
    missing = "bucket 'no-such-bucket-here' does not exist"  # issue 10, bug 8: it read "access refused"
    with pytest.raises(StorageAccessError, match=missing):
        storage.read("s3://no-such-bucket-here/x.png")
    with pytest.raises(StorageAccessError, match=missing):
        storage.write("s3://no-such-bucket-here/x.png", b"x")
    with pytest.raises(StorageAccessError, match=missing):
        list(storage.list("s3://no-such-bucket-here/in/"))
    assert storage.head(f"s3://{bucket}/missing.png") is None

    dead = S3Storage(Settings(s3_endpoint_url="http://127.0.0.1:9", s3_max_attempts=2, s3_connect_timeout=0.5))
    with pytest.raises(TransientStorageError, match="127.0.0.1:9|Connect"):
        dead.read(f"s3://{bucket}/x.png")


def test_endpoint_falls_back_to_the_standard_aws_variable(monkeypatch, s3_endpoint, s3_client, bucket):
    monkeypatch.delenv("IMGRESTORE_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    s3_client.put_object(Bucket=bucket, Key="k.png", Body=b"data")
    assert StorageRouter(Settings()).read(f"s3://{bucket}/k.png") == b"data"
