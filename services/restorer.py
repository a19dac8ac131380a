"""The one path every job takes, in-process (``imgrestore run``) or in a Celery worker.

input URL → storage.read → imaging.codecs.decode (documents: imaging.documents, page by page) → inference (tiles → ORT
→ blend) → imaging.codecs.encode → storage.write
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from .config import Settings
from .errors import ImgRestoreError
from .imaging.codecs import decode, encode
from .imaging.documents import document_kind, refuse_document_format_for_image, restore_document
from .inference.content import guess_profile
from .inference.page_colour import PaperTint, has_meaningful_colour, recolour
from .inference.registry import LoadedModel, ModelRegistry
from .inference.runner import InferenceOutput, TileSettings, run_largest_tile_batch, run_model
from .inference.slots import ModelSlots
from .jobs import (DocumentColour, Job, JobError, OutputInfo, Profile, RestoreOutcome, StageTimings, Task,
                   bounded_tile_size)
from .memory import release_free_memory
from .storage import StorageRouter
from .time_limits import HardLimitWatchdog, JobClock, TimeLimits

log = logging.getLogger(__name__)


@contextmanager
def _stage(timings: StageTimings, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        setattr(timings, name, round(time.perf_counter() - started, 6))


class Restorer:
    """Holds what a process keeps between jobs (storage clients, model sessions) and restores one job at a time.

    ``model_slots``: shared with the worker's other pool processes, so that only so many run the model at once while
    the rest download, decode, encode and upload (``inference.slots``); None runs the model whenever a job gets there.
    """

    def __init__(self, settings: Settings, storage: StorageRouter | None = None, registry: ModelRegistry | None = None,
                 model_slots: ModelSlots | None = None, watchdog: HardLimitWatchdog | None = None):
        self.settings = settings
        self.storage = storage or StorageRouter(settings)
        self.registry = registry or ModelRegistry.from_settings(settings)
        self.model_slots = model_slots
        self.time_limits = TimeLimits.from_settings(settings)
        self.watchdog = watchdog  # workers only: the hard time limit (services/time_limits.py)

    def restore(self, job: Job, timings: StageTimings | None = None) -> RestoreOutcome:
        """Runs ``job`` end to end within its time limits. ``timings`` is filled stage by stage, so a failure still
        shows where it was."""
        timings = timings if timings is not None else StageTimings()
        clock = JobClock(self.time_limits)
        try:
            with self.watchdog.watching(job, clock) if self.watchdog else nullcontext():
                return self._restore(job, timings, clock)
        finally:  # the job's images are freed by now: back to the system, so job after job starts from one floor
            release_free_memory()

    def _restore(self, job: Job, timings: StageTimings, clock: JobClock) -> RestoreOutcome:
        with _stage(timings, "download"):
            data = self.storage.read(job.input_url)
        clock.check("download")
        if document_kind(data) is not None:  # PDF, multi-page or bilevel TIFF: page by page through infer()
            return restore_document(self, job, data, timings, clock)
        refuse_document_format_for_image(job.options.output_format)
        with _stage(timings, "decode"):
            image = decode(data, self.settings.max_pixels)
            del data
        clock.count(image.megapixels)
        clock.check("decode")
        output, model, profile = self.infer(job, image.pixels, timings=timings, clock=clock)
        with _stage(timings, "encode"):
            encoded = encode(
                output.pixels,
                image.alpha,
                job.options.output_format or image.output_format,
                jpeg_quality=job.options.jpeg_quality or self.settings.jpeg_quality,
                png_compress_level=self.settings.png_compress_level,
                icc_profile=image.icc_profile,
                dpi=image.dpi,
                exif=image.exif,
                # denoise knows its profile (asked for, or guessed from the input); other tasks look at the result
                content=profile or guess_profile(output.pixels),
            )
        clock.check("encode")  # before the upload: a job over its limit leaves no output
        with _stage(timings, "upload"):
            self.storage.write(job.output_url, encoded.data, encoded.content_type)
        result = OutputInfo(
            width=image.width,
            height=image.height,
            mode=encoded.mode,
            format=encoded.format,
            bytes=len(encoded.data),
            megapixels=round(image.megapixels, 6),
            model=model.qualified_name,
            profile=profile,
            tiles=output.tiles,
        )
        log.info(
            "job restored",
            extra={"job_id": job.id, "task": job.task.value, "model": model.qualified_name,
                   "provider": model.provider, "megapixels": result.megapixels, "timings": timings.model_dump()},
        )
        return RestoreOutcome(result=result, timings=timings, provider=model.provider)

    def infer(self, job: Job, pixels: np.ndarray, timings: StageTimings | None = None, clock: JobClock | None = None
              ) -> tuple[InferenceOutput, LoadedModel, str | None]:
        """The model step of one image (or one page of a document): profile, model, tiling, inference — the model
        itself in a model slot when the worker has them. With ``timings``, adds its seconds to ``infer`` and the
        wait for the slot to ``model_wait`` (a document's pages are timed by their caller, the wait within ``infer``).
        ``clock`` (the job's time limit) is checked before every tile batch; loading a model and waiting for a slot
        are the worker's costs, not the job's, and do not count against it.
        """
        started = time.perf_counter()
        waited = 0.0
        try:
            profile = self._profile(job, pixels)
            spec = self.registry.resolve(job.task.value, profile)
            with clock.paused() if clock else nullcontext():
                model = self.registry.load(spec)
            tiling = self.tiling_for(model, job.options.tile_size)
            before_batch = (lambda: clock.check("infer")) if clock else None
            with ExitStack() as slot:
                if self.model_slots:
                    with clock.paused() if clock else nullcontext():
                        waited = slot.enter_context(self.model_slots.turn())
                output = run_model(model, pixels, tiling, keeps_gray=job.task is not Task.colorize,
                                   before_batch=before_batch)
            if pixels.shape[2] == 3 and output.pixels.shape[2] == 1:  # a colour page through a gray (document) model
                output = self._page_colour(job, pixels, output)
            return output, model, profile
        finally:
            if timings is not None:
                spent = time.perf_counter() - started
                timings.infer = round((timings.infer or 0.0) + spent - waited, 6)
                if self.model_slots:
                    timings.model_wait = round((timings.model_wait or 0.0) + waited, 6)

    def _page_colour(self, job: Job, pixels: np.ndarray, output: InferenceOutput) -> InferenceOutput:
        """The gray model's page, in colour again when the job's colour mode (default: the settings') asks for it."""
        mode = job.options.color or DocumentColour(self.settings.document_color)
        if mode is DocumentColour.gray:
            return output
        tint = PaperTint.of(pixels, output.pixels)
        if mode is DocumentColour.auto and not has_meaningful_colour(pixels, output.pixels, tint):
            return output  # tinted paper and black ink: a gray page is as faithful and much smaller
        return InferenceOutput(recolour(pixels, output.pixels, tint), output.tiles)

    def tiling_for(self, model: LoadedModel, requested_tile_size: int | None = None) -> TileSettings:
        """A job's tile size if it asks for one, else the settings', else the model's own."""
        spec = model.spec
        return TileSettings(
            tile_size=(bounded_tile_size(requested_tile_size) if requested_tile_size else
                       self.settings.tile_size or spec.tiling.tile_size),
            overlap=self.settings.tile_overlap if self.settings.tile_overlap is not None else spec.tiling.overlap,
            batch_size=self.settings.tile_batch_size,
        )

    def warm_up(self, model: LoadedModel) -> None:
        """Brings ``model``'s memory to its working size at load (workers: their memory is then flat job after job,
        whatever the image sizes, unless a job asks for larger tiles than the default)."""
        started = time.perf_counter()
        try:
            shape = run_largest_tile_batch(model, self.tiling_for(model))
        except Exception as exc:  # an optimisation: the job that loaded the model must not fail because of it
            log.warning("model warm-up failed", extra={"model": model.qualified_name, "error": str(exc)})
            return
        log.info("model warmed up", extra={"model": model.qualified_name, "shape": list(shape),
                                           "seconds": round(time.perf_counter() - started, 3)})

    @staticmethod
    def _profile(job: Job, pixels) -> str | None:
        if job.task is not Task.denoise:
            return None
        if job.profile is Profile.auto:
            return guess_profile(pixels)
        return job.profile.value


@dataclass
class Attempt:
    """One in-process restore and how it ended: what ``run``, embedded backfills and ``watch`` all record."""

    job: Job
    outcome: RestoreOutcome | None = None
    error: JobError | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


def attempt(restorer: Restorer, job: Job) -> Attempt:
    """``restorer.restore(job)``, with any failure turned into a ``JobError``: one bad file never stops the rest.

    Only ``Exception``s are caught: Ctrl-C still interrupts, and the write it interrupts is atomic."""
    try:
        return Attempt(job, outcome=restorer.restore(job))
    except ImgRestoreError as exc:
        return Attempt(job, error=JobError(type=exc.code, message=exc.message, transient=exc.transient))
    except Exception as exc:
        log.exception("unexpected failure restoring an image", extra={"input_url": job.input_url})
        return Attempt(job, error=JobError(type="internal", message=f"{type(exc).__name__}: {exc}"))
