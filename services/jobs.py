"""What a job is: its request, its state and what it produced."""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from .errors import UnsupportedImageError
from .imaging.codecs import EXTENSIONS, PAGE_FOLDER_FORMATS, normalize_format


class Task(str, Enum):
    denoise = "denoise"
    colorize = "colorize"
    watermark = "watermark"


class Profile(str, Enum):
    document = "document"
    photo = "photo"
    auto = "auto"


class DocumentColour(str, Enum):
    """What a gray document model (doc-denoise) gives for a colour page (services/inference/page_colour.py)."""

    auto = "auto"  # colour when the page has meaningful colour (stamps, coloured ink, highlighter), else compact gray
    keep = "keep"  # colour out for every colour page
    gray = "gray"  # always gray (the only behaviour before)


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed)


# Per-job tile sizes allowed by the API and `imgrestore run`: working memory grows with the square of the tile (4096
# on a 16.7 MP photo peaked at 5.2 GB, 7× the default), and tiny tiles multiply the overlap computed twice (32: 3.4×
# the CPU). Workers clamp whatever reaches them (older records, other clients) into the same range.
TILE_SIZE_MIN = 128
TILE_SIZE_MAX = 1024


def bounded_tile_size(size: int) -> int:
    return min(max(size, TILE_SIZE_MIN), TILE_SIZE_MAX)


class JobOptions(BaseModel):
    """Per-job knobs; anything left unset takes the service settings."""

    model_config = {"extra": "forbid"}

    output_format: str | None = Field(None, description="png, jpeg, tiff, webp or bmp; documents also pdf, png-pages, "
                                      "jpeg-pages or tiff-pages (a folder of page images); default: the input's format")
    jpeg_quality: int | None = Field(None, ge=1, le=100)
    tile_size: int | None = Field(None, ge=32, le=4096)
    color: DocumentColour | None = Field(
        None, description="Colour pages through the gray document model: auto, keep or gray; default: the settings'")

    def id_fields(self) -> dict[str, Any]:
        """What request ids hash: fields added after ids were first issued count only when set, so backfills and
        watches started before keep their ids (``--resume`` and state files find them)."""
        fields = self.model_dump(mode="json")
        if fields["color"] is None:
            del fields["color"]
        return fields

    @field_validator("output_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        try:
            return normalize_format(value) if value else None
        except UnsupportedImageError as exc:  # pydantic reports ValueErrors as validation errors
            raise ValueError(exc.message) from None


class JobError(BaseModel):
    type: str
    message: str
    transient: bool = False


class StageTimings(BaseModel):
    """Seconds spent in each stage of the job's last attempt."""

    download: float | None = None
    decode: float | None = None
    infer: float | None = None
    model_wait: float | None = None  # waiting for a model slot (IMGRESTORE_MODEL_SLOTS), outside ``infer``
    encode: float | None = None
    upload: float | None = None

    @property
    def total(self) -> float:
        return sum(v for v in self.model_dump().values() if v is not None)


class PageCounts(BaseModel):
    """Pages of a document (PDF, multi-page TIFF): restored through a model, or passed through untouched."""

    total: int
    restored: int
    passed_through: int = Field(0, description="Born-digital PDF pages (text and vectors, no scan), copied as they were.")
    rendered: int = Field(0, description="Restored PDF pages that were not a single image, so were rendered first.")


class OutputInfo(BaseModel):
    width: int
    height: int
    mode: str
    format: str
    bytes: int
    megapixels: float
    model: str
    profile: str | None = None
    tiles: int
    pages: PageCounts | None = Field(None, description="Documents only; width and height are the first page's.")


@dataclass
class RestoreOutcome:
    """What restoring one job (an image or a whole document) produced, as the job record keeps it."""

    result: OutputInfo
    timings: StageTimings
    provider: str


class JobRequest(BaseModel):
    """What a client asks for. The output URL is derived from the input when not given."""

    task: Task
    input_url: str = Field(min_length=1)
    output_url: str | None = None
    profile: Profile = Profile.auto
    options: JobOptions = Field(default_factory=JobOptions)
    batch_id: str | None = None
    callback_url: str | None = Field(None, description="Webhook notified (signed POST) when the job finishes.")


def new_job_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Job(BaseModel):
    id: str = Field(default_factory=new_job_id)
    task: Task
    profile: Profile = Profile.auto
    input_url: str
    output_url: str
    options: JobOptions = Field(default_factory=JobOptions)
    batch_id: str | None = None
    owner: str | None = Field(None, description="Name of the API token that submitted the job.")
    callback_url: str | None = None
    state: JobState = JobState.queued
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(0, description="Deliveries to a worker (a redelivered job shows 2).")
    retries: int = Field(0, description="Retries scheduled after transient errors.")
    lost: int = Field(0, description="Deliveries whose worker died before finishing.")
    interrupted: int = Field(0, description="Deliveries ended by a Redis outage (the worker lived; not counted as lost).")
    orphaned: int = Field(0, description="Times the job was found running with nobody holding it and was re-queued.")
    error: JobError | None = None
    timings: StageTimings = Field(default_factory=StageTimings)
    provider: str | None = None
    worker: str | None = None
    result: OutputInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_output(cls, data: Any) -> Any:
        """A record or queue message written by ``compact_dump`` leaves out an ``output_url`` that is the default
        one: it is derived again here, by the same rule that chose it."""
        if isinstance(data, dict) and "output_url" not in data and "input_url" in data and "task" in data:
            options = data.get("options") or {}
            fmt = options.get("output_format") if isinstance(options, dict) else options.output_format
            output = derive_output_url(data["input_url"], data["task"], data.get("profile", Profile.auto), fmt)
            data = {**data, "output_url": output}
        return data

    def compact_dump(self) -> dict[str, Any]:
        """The job as JSON values without what ``model_validate`` rebuilds: fields at their defaults (zero counters,
        empty timings and options, unset fields) and a default ``output_url``. Records and queue messages are
        stored this way: a queued job is a third of its full dump (issue 16, bytes of Redis per queued job)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        if data.get("output_url") == derive_output_url(self.input_url, self.task, self.profile,
                                                       self.options.output_format):
            del data["output_url"]
        return data

    @classmethod
    def from_request(cls, request: JobRequest, **fields: Any) -> "Job":
        output = request.output_url or derive_output_url(
            request.input_url, request.task, request.profile, request.options.output_format
        )
        return cls(
            task=request.task,
            profile=request.profile,
            input_url=request.input_url,
            output_url=output,
            options=request.options,
            batch_id=request.batch_id,
            callback_url=request.callback_url,
            **fields,
        )

    @property
    def variant(self) -> str:
        return variant_name(self.task, self.profile)


# --- where results go: one naming rule and one list of what the service restores ----------------------------------
RESTORED_DIR = "restored"  # default outputs go to <input folder>/restored/<variant>/

# The file names the service restores, wherever inputs are listed (run, batches, backfills, watch): images in every
# format it decodes, and PDFs (multi-page TIFFs are already .tif).
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".pdf")
DEFAULT_INCLUDE = [f"*{suffix}" for suffix in INPUT_SUFFIXES]


def is_input_name(name: str) -> bool:
    return name.lower().endswith(INPUT_SUFFIXES)


def variant_name(task: Task | str, profile: Profile | str) -> str:
    task = Task(task)
    return f"{task.value}-{Profile(profile).value}" if task is Task.denoise else task.value


VARIANTS = frozenset(variant_name(task, profile) for task in Task for profile in Profile)


def output_name(name: str, output_format: str | None) -> str:
    """The one naming rule for a result: an explicit output format gives its extension (page images: none,
    ``ledger.pdf`` → ``ledger``, the folder or S3 prefix of ``ledger/page-0001.png``…), a GIF input gets ``.png``
    (the format it is written in), anything else keeps its name. ``name`` may carry folders (``a/p1.gif``)."""
    stem, suffix = posixpath.splitext(name)
    if output_format:
        fmt = normalize_format(output_format)
        return stem + ("" if fmt in PAGE_FOLDER_FORMATS else EXTENSIONS[fmt])
    if suffix.lower() == ".gif":
        return stem + ".png"
    return name


def derive_output_url(
    input_url: str, task: Task | str, profile: Profile | str = Profile.auto, output_format: str | None = None
) -> str:
    """The default, deterministic output location: ``restored/<variant>/`` next to the input.

    ``s3://b/scans/p1.png`` → ``s3://b/scans/restored/denoise-auto/p1.png``;
    ``/data/p1.tif`` → ``/data/restored/denoise-auto/p1.tif``. The name follows ``output_name``. Re-running the
    same job writes the same key. Listings skip these folders (``in_restored_folder``), so a later batch or backfill
    over the same prefix never takes them as inputs.
    """
    head, name = posixpath.split(input_url)
    return posixpath.join(head, RESTORED_DIR, variant_name(task, profile), output_name(name, output_format))


def output_under(output: str, relative: str, output_format: str | None) -> str:
    """Where an input found at ``relative`` (its path below the listed root) goes under an output prefix or folder."""
    return output.rstrip("/") + "/" + output_name(relative.lstrip("/"), output_format)


def in_restored_folder(relative: str) -> bool:
    """True when ``relative`` (a path below a listed root) lies in a ``restored/<variant>/`` folder: results this
    service wrote there by default, never inputs of a later listing (a colorized scan would be denoised next)."""
    folders = relative.split("/")[:-1]
    return any(a == RESTORED_DIR and b in VARIANTS for a, b in zip(folders, folders[1:]))
