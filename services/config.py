"""Settings, read from ``IMGRESTORE_*`` environment variables (documented in README.md)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Names of services.jobs.DocumentColour: settings and the CLI's option list take them without importing jobs (and
# so Pillow and numpy), which would slow every command's start.
DocumentColourName = Literal["auto", "keep", "gray"]
CpuArena = Literal["shared", "per-model", "off"]  # inference/registry.py says what each costs

if TYPE_CHECKING:
    from .webhooks import Egress

PACKAGED_MODEL_DIR = Path(__file__).parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGRESTORE_", extra="ignore")

    # --- Redis: broker, Celery result backend and job store ---
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("imgrestore:", description="Prefix of every job-store key in Redis.")
    job_ttl_seconds: int = Field(7 * 24 * 3600, gt=0, description="How long job records live in Redis.")

    # --- S3 (any S3-compatible endpoint); unset values fall back to boto3's standard chain ---
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_retry_mode: Literal["standard", "adaptive"] = "adaptive"
    s3_max_attempts: int = Field(5, ge=1, description="boto3's own attempts per request, before a job retry.")
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 60.0
    s3_multipart_threshold_mb: int = Field(64, ge=5)
    s3_multipart_chunksize_mb: int = Field(16, ge=5)
    s3_max_pool_connections: int = Field(
        32, ge=1, description="HTTP connections per S3 client: threads beyond it wait for one (and urllib3 warns)."
    )

    # --- images ---
    max_pixels: int = Field(100_000_000, gt=0, description="Decompression-bomb guard: larger images fail.")
    max_document_pages: int = Field(2000, gt=0, description="PDFs and multi-page TIFFs with more pages fail.")
    max_page_pixels: int = Field(
        100_000_000, gt=0, description="Pixels of one document page (an embedded scan, or a PDF page rendered at "
        "IMGRESTORE_PDF_RENDER_DPI); a larger page fails the document."
    )
    pdf_render_dpi: int = Field(
        300, ge=50, le=1200, description="Resolution at which PDF pages that are not one scanned image are rendered; "
        "also the DPI assumed for a TIFF page without one when it is written as a PDF page."
    )
    jpeg_quality: int = Field(95, ge=1, le=100)
    document_color: DocumentColourName = Field(
        "auto", description="Colour pages through the gray document model (doc-denoise): auto keeps "
        "colour when the page has meaningful colour (stamps, coloured ink, highlighter) and writes other pages gray; "
        "keep always keeps it; gray always drops it. Per job: --color / options.color."
    )
    png_compress_level: int = Field(
        1, ge=0, le=9, description="zlib level of PNG output: 1 uses run-length matching for 8-bit gray and RGB "
        "(faster than level 1's default matcher and as small as 6: bench/results/codecs.md); 2-9 the default "
        "matcher at that level. Document pages are written unfiltered at every level."
    )

    # --- inference ---
    model_dir: Path = PACKAGED_MODEL_DIR
    providers: str = Field("auto", description="'auto' (CUDA when available, else CPU) or a comma list.")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 lets ORT decide.")
    cpu_arena: CpuArena = Field(
        "shared", description="Where ONNX Runtime keeps CPU tensors: one arena for all models (flat memory), one per "
        "model (ORT's default; grows as tile shapes vary), or none (least memory between jobs, ~12 % slower)."
    )
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="auto: a model's variant made for the provider in use (int8 on CPU), else fp32."
    )
    tile_size: int | None = Field(
        None, ge=32, description="Overrides each model's default tile size (512). 768 infers ~25 % faster on CPU but "
        "each loaded model keeps a working set ~170 MiB larger per process (README, Performance): worth it where "
        "memory is plentiful (GPU workers, one-model workers), not for CPU workers serving every model."
    )
    tile_overlap: int | None = Field(None, ge=0)
    tile_batch_size: int = Field(4, ge=1)

    # --- queue and retry policy ---
    queue_prefix: str = "imgrestore."
    worker_concurrency: int = Field(1, ge=1)
    model_slots: int = Field(
        0, ge=0, description="Pool processes of a worker that may run the model at once; the others download, "
        "decode, encode and upload meanwhile (services/inference/slots.py). 0: no limit (every process runs its "
        "model when it gets there). Pipelined: 1 with IMGRESTORE_WORKER_CONCURRENCY 3."
    )
    visibility_timeout: int = Field(
        60, ge=1, description="Backstop: seconds before an unacknowledged message nobody renews is delivered again "
        "(a dead worker's are reclaimed sooner, after IMGRESTORE_LEASE_TTL)."
    )
    lease_ttl: float = Field(
        10.0, gt=0, description="Seconds a worker's leases and delivery claims live without renewal; a worker "
        "silent that long is dead and its deliveries are reclaimed."
    )
    lease_renew_interval: float = Field(
        3.0, gt=0, description="How often a live worker extends its leases and claims (keep it ≤ lease_ttl / 3)."
    )
    unacked_restore_interval: int = Field(10, ge=1, description="How often workers sweep for expired leases.")
    max_retries: int = Field(5, ge=0, description="Retries of a transient failure before the job fails.")
    retry_backoff_base: float = Field(2.0, gt=0)
    retry_backoff_max: float = Field(300.0, gt=0)
    max_lost_deliveries: int = Field(
        3, ge=1, description="Deliveries whose worker died before the job goes to the dead-letter record."
    )
    redis_outage_wait: float = Field(
        60.0, ge=0, description="Seconds a task that meets a Redis outage waits (with backoff) for Redis before it "
        "ends its pool process, leaving its message unacknowledged to be delivered again."
    )
    job_time_limit_base: float = Field(
        60.0, ge=0, description="Seconds every job may run (soft limit, plus the per-megapixel allowance); past it the "
        "job fails as time_limit_exceeded. 0 turns the time limits off."
    )
    job_time_limit_per_megapixel: float = Field(
        10.0, ge=0, description="Seconds added to a job's time limit for each decoded megapixel (all pages)."
    )
    job_time_limit_hard_grace: float = Field(
        60.0, gt=0, description="Seconds past the soft limit after which a worker process still on the job is "
        "replaced (the job is recorded failed first)."
    )
    orphan_sweep_interval: float = Field(
        30.0, gt=0, description="How often each worker looks for running jobs nobody holds and re-queues them."
    )

    # --- worker process ---
    metrics_port: int = Field(9808, ge=0, description="Worker metrics endpoint port; 0 turns it off.")
    metrics_host: str = Field(
        "0.0.0.0", description="Address the worker metrics endpoint binds: 127.0.0.1 (or the pod IP) keeps it off "
        "other networks; it has no authentication."
    )
    worker_soft_shutdown_timeout: float = Field(
        600.0, ge=0, description="On SIGTERM, seconds running jobs get to finish before they are requeued."
    )

    # --- HTTP API ---
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_tokens: SecretStr | None = Field(
        None, description='JSON: {"<token>": {"name": "...", "allow": ["s3://bucket/prefix/", ...]}}'
    )
    api_max_request_bytes: int = Field(1_000_000, gt=0)
    api_max_batch_inputs: int = Field(10_000, gt=0)
    api_idempotency_ttl_seconds: int = Field(
        24 * 3600, gt=0, description="How long an Idempotency-Key keeps returning the job or batch it created."
    )
    api_thumbnail_max_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Larger images get no thumbnail (the API reads them whole)."
    )
    api_thumbnail_max_pixels: int = Field(
        16_000_000, gt=0, description="Thumbnails are made of images up to this many pixels (far below "
        "IMGRESTORE_MAX_PIXELS: the API's memory is small)."
    )
    api_thumbnail_concurrency: int = Field(
        2, ge=1, description="Thumbnail decodes running at once in the API process; more wait (503 after 10 s)."
    )
    api_docs: bool = Field(
        False, description="Serve /docs (Swagger UI, which loads its script from a CDN); /openapi.json is always "
        "served."
    )
    max_queued_jobs: int = Field(
        1_000_000, ge=0, description="Submissions are refused (429) while this many jobs wait in all queues "
        "together; 0: no cap. Size it below what Redis can hold (about 1.4 KB a queued job)."
    )
    task_sent_events: bool = Field(
        False, description="Publish a Celery task-sent event for every job queued (Flower then lists jobs while "
        "they wait). Off: one PUBLISH less per job, and Flower shows a job once a worker has received it."
    )
    max_queued_jobs_per_queue: int = Field(
        0, ge=0, description="The same cap for each queue on its own; 0: no cap."
    )
    api_max_unfinished_jobs_per_token: int = Field(
        20_000, ge=0, description="Per-token quota: a submission is refused (429) when it would leave the token "
        "with more than this many queued or running jobs; 0: no quota."
    )
    api_quota_recount_interval: float = Field(
        60.0, ge=0, description="When the per-token quota refuses a submission, the token's count of unfinished "
        "jobs is recomputed from its job records (a record that expired or was evicted while queued would "
        "otherwise hold its place for ever), at most once per this many seconds per token; 0: never."
    )
    api_submissions_per_minute_per_token: int = Field(
        6000, ge=0, description="Per-token quota: job and batch submissions (POST requests) a token may make per "
        "minute (a fixed one-minute window; the default, 100/s, lets one client use a fifth of an API process's "
        "500/s, and many inputs go in one batch anyway); over it → 429 with Retry-After. 0: no quota."
    )
    api_inline_batch_inputs: int = Field(
        100, ge=0, description="Batches with at most this many inputs are queued inside the request; larger "
        "ones are answered at once (state submitting) and queued by the workers."
    )
    batch_max_in_flight: int = Field(
        10_000, gt=0, description="Prefix batches queue more jobs only while fewer than this are unfinished."
    )

    # --- webhooks ---
    callback_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing webhook bodies.")
    callback_timeout: float = Field(
        5.0, gt=0, description="Overall deadline of one webhook attempt: connect, send and the whole answer."
    )
    callback_max_attempts: int = Field(5, ge=1)
    callback_max_response_bytes: int = Field(65_536, ge=0, description="At most this much of an answer is read.")
    callback_sender_threads: int = Field(
        4, ge=1, description="Webhook sender threads per worker process (off the restore path)."
    )
    callback_allowed_networks: str = Field(
        "", description="Comma list of CIDRs webhooks may reach although not public (in-cluster receivers), "
        "e.g. 10.0.0.0/8. Empty: public addresses only."
    )

    # --- logging ---
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("s3_endpoint_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _standard_aws_endpoint(self) -> "Settings":
        # The standard AWS variables name the endpoint when ours is not set.
        if self.s3_endpoint_url is None:
            self.s3_endpoint_url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return self

    @field_validator("callback_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        if value.strip(" ,"):  # none (the default) needs no check, nor webhooks' imports at every command's start
            from .webhooks import parse_networks

            parse_networks(value)  # a malformed entry fails at startup, naming itself
        return value

    @property
    def callback_egress(self) -> "Egress":
        from .webhooks import Egress, parse_networks

        return Egress(parse_networks(self.callback_allowed_networks), self.callback_timeout,
                      self.callback_max_response_bytes)

    @model_validator(mode="after")
    def _renewed_before_lapsing(self) -> "Settings":
        if self.lease_renew_interval >= self.lease_ttl:
            raise ValueError(f"IMGRESTORE_LEASE_RENEW_INTERVAL ({self.lease_renew_interval}) must be shorter than "
                             f"IMGRESTORE_LEASE_TTL ({self.lease_ttl}): leases would lapse on live workers")
        return self

    def queue_for(self, task: str) -> str:
        return f"{self.queue_prefix}{task}"

    @property
    def control_queue(self) -> str:
        """Small housekeeping tasks (server-side batch expansion) that every worker serves."""
        return f"{self.queue_prefix}control"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
