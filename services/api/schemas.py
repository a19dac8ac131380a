"""Request and response bodies of the API (they are what the OpenAPI schema documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..jobs import TILE_SIZE_MAX, TILE_SIZE_MIN, DocumentColour, Job, JobError, JobOptions, JobState, Profile, Task
from ..queue.batch_store import Batch
from .urls import CALLBACK_PATTERN, S3_OBJECT_PATTERN, S3_PREFIX_PATTERN

URL_MAX = 1024
# Patterns are documented in the schema (so clients and fuzzers see the rules) and enforced by services.api.urls,
# which explains what is wrong with a URL better than a failed regex would.
_OBJECT = {"pattern": S3_OBJECT_PATTERN}
_PREFIX = {"pattern": S3_PREFIX_PATTERN}
_CALLBACK = {"pattern": CALLBACK_PATTERN}
Url = Annotated[str, Field(min_length=1, max_length=URL_MAX, json_schema_extra=_OBJECT)]
Pattern = Annotated[str, Field(min_length=1, max_length=100, json_schema_extra={"pattern": r"\S"})]


class OptionsIn(BaseModel):
    """Per-job knobs; anything left out takes the service settings."""

    model_config = ConfigDict(extra="forbid")

    output_format: Literal["png", "jpeg", "jpg", "tiff", "tif", "webp", "bmp", "pdf", "png-pages", "jpeg-pages",
                           "jpg-pages", "tiff-pages", "tif-pages"] | None = Field(
        None, description="Default: the input's format. Documents (PDF, multi-page TIFF) can also be written as pdf or "
        "tiff, or with *-pages as page images under output_url as a prefix (<output_url>/page-0001.png…); "
        "a single-image format only for one-page documents, and pdf or *-pages only for documents")
    jpeg_quality: int | None = Field(None, ge=1, le=100, description="JPEG/WebP quality")
    tile_size: int | None = Field(None, ge=TILE_SIZE_MIN, le=TILE_SIZE_MAX,
                                  description="Overrides the model's tile size (memory grows with its square)")
    color: DocumentColour | None = Field(
        None, description="Colour pages through the gray document model (denoise, document profile): `auto` (the "
        "default, IMGRESTORE_DOCUMENT_COLOR) keeps colour when a page has meaningful colour (stamps, coloured ink, "
        "highlighter) and writes other pages gray; `keep` always keeps it; `gray` always drops it")

    def to_job_options(self) -> JobOptions:
        return JobOptions(**self.model_dump())


class JobCreate(BaseModel):
    """One image to restore. Without `output_url` the result goes to `restored/<variant>/` next to the input."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "denoise", "profile": "document", "input_url": "s3://scans/in/page-1.png"}]})

    task: Task
    input_url: str = Field(min_length=1, max_length=URL_MAX, description="s3://bucket/key of the image",
                           json_schema_extra=_OBJECT)
    # Optional but not nullable (default None, an explicit null is refused), so the schema says exactly that.
    output_url: str = Field(None, min_length=1, max_length=URL_MAX,  # type: ignore[assignment]
                            description="s3://bucket/key to write", json_schema_extra=_OBJECT)
    profile: Profile = Profile.auto
    options: OptionsIn = Field(default_factory=OptionsIn)
    callback_url: str = Field(None, min_length=1, max_length=2048,  # type: ignore[assignment]
                              json_schema_extra=_CALLBACK,
                              description="http(s) URL that gets a signed POST when the job finishes")


class BatchCreate(BaseModel):
    """Many images: either `inputs` (queued now) or an S3 `prefix` (listed and queued by the workers)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["inputs"]}, {"required": ["prefix"]}],
        "dependentRequired": {"include": ["prefix"]},
        "examples": [{"task": "denoise", "profile": "document", "prefix": "s3://scans/2019/",
                      "output_prefix": "s3://scans/clean/2019/"}]})

    task: Task
    profile: Profile = Profile.auto
    options: OptionsIn = Field(default_factory=OptionsIn)
    inputs: list[Url] = Field(None, min_length=1, json_schema_extra={"uniqueItems": True},  # type: ignore[assignment]
                              description="s3:// object URLs, at most IMGRESTORE_API_MAX_BATCH_INPUTS "
                                          "(default 10 000)")
    prefix: str = Field(None, min_length=1, max_length=URL_MAX,  # type: ignore[assignment]
                        description="s3://bucket/prefix/ to expand", json_schema_extra=_PREFIX)
    include: list[Pattern] = Field(None, min_length=1, max_length=32,  # type: ignore[assignment]
                                   description="With prefix: file-name patterns (default: common image types)")
    output_prefix: str = Field(None, min_length=1, max_length=URL_MAX,  # type: ignore[assignment]
                               json_schema_extra=_PREFIX,
                               description="Outputs go under it (an input's path below the prefix, or its file "
                                           "name); default: restored/<variant>/ next to each input")
    callback_url: str = Field(None, min_length=1, max_length=2048,  # type: ignore[assignment]
                              json_schema_extra=_CALLBACK,
                              description="http(s) URL that gets a signed POST when the batch finishes")

    @model_validator(mode="after")
    def _one_source(self) -> "BatchCreate":
        if (self.inputs is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'inputs' (a list of s3:// URLs) or 'prefix' (an s3:// prefix)")
        if self.include is not None and self.prefix is None:
            raise ValueError("'include' applies to a 'prefix' batch only")
        if any(not pattern.strip() for pattern in self.include or ()):
            raise ValueError("include patterns must not be blank; e.g. '*.png'")
        return self


class BatchCounts(BaseModel):
    succeeded: int
    failed: int
    pending: int = Field(description="queued or running")


class FailedJob(BaseModel):
    id: str
    input_url: str
    error: JobError | None


class BatchView(BaseModel):
    id: str
    kind: str = Field(description="'batch' (API) or 'backfill' (imgrestore backfill)")
    state: str = Field(description="submitting (still listing or adding jobs), running or finished")
    task: Task
    profile: Profile
    options: JobOptions
    source: str = Field(description="The listed prefix of a prefix batch or backfill; empty for an inputs batch")
    output_prefix: str | None
    owner: str | None
    callback_url: str | None
    created_at: datetime
    finished_at: datetime | None
    sealed: bool = Field(description="No more jobs will be added")
    cancelled: bool = Field(False, description="DELETE /v1/batches/{id} stopped it: nothing more is queued")
    total: int
    counts: BatchCounts
    progress: float = Field(ge=0, le=1)
    error: str | None = Field(None, description="Why listing the prefix stopped, if it failed")
    failures: list[FailedJob] = Field(default_factory=list, description="Up to 20 failed jobs, oldest first")

    @classmethod
    def of(cls, batch: Batch, error: str | None = None, failures: list[Job] | None = None) -> "BatchView":
        return cls(
            id=batch.id, kind=batch.kind, state=batch.state.value, task=batch.task, profile=batch.profile,
            options=batch.options, source=batch.source, output_prefix=batch.output_prefix, owner=batch.owner,
            callback_url=batch.callback_url, created_at=batch.created_at, finished_at=batch.finished_at,
            sealed=batch.sealed, cancelled=batch.cancelled, total=batch.total,
            counts=BatchCounts(succeeded=batch.succeeded, failed=batch.failed,
                               pending=max(0, batch.total - batch.done)),
            progress=min(1.0, max(0.0, batch.progress)), error=error,
            failures=[FailedJob(id=j.id, input_url=j.input_url, error=j.error) for j in failures or ()],
        )


class BatchCancelled(BaseModel):
    batch: BatchView
    cancelled: int = Field(description="Queued jobs cancelled by this request (they fail with `cancelled`)")
    running: int = Field(description="Jobs already started: they finish")


class JobList(BaseModel):
    jobs: list[Job]


class BatchList(BaseModel):
    batches: list[BatchView]


class CheckResult(BaseModel):
    ok: bool
    reason: str | None = Field(None, description="Why the check failed, a stable code: redis_unreachable, "
                               "redis_oom, redis_read_only, redis_no_replicas, redis_error, storage_unreachable, "
                               "storage_error (details are in the API's log)")
    error: str | None = Field(None, description="What the reason means, for a human")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="'ready' or 'unavailable'")
    checks: dict[str, CheckResult]


__all__ = ["JobCreate", "BatchCreate", "BatchView", "BatchCounts", "FailedJob", "JobList", "BatchList",
           "CheckResult", "Health", "Readiness", "Job", "JobState"]
