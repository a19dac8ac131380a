"""The exceptions a job can end with.

Every error carries a short stable ``code`` (stored in the job record as ``error.type``) and a message a user can
act on. ``transient`` decides the retry policy: transient errors are retried with backoff, permanent ones fail the
job at once.
"""

from __future__ import annotations


class ImgRestoreError(Exception):
    """Base class: a failure with a user-facing reason."""

    code = "error"
    transient = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(ImgRestoreError):
    """Retrying cannot help (bad input, unknown model, access denied)."""


class TransientError(ImgRestoreError):
    """Worth retrying later (timeouts, 5xx, throttling, lost connections)."""

    transient = True


# --- configuration and jobs -------------------------------------------------------------------------------------
class ConfigurationError(PermanentError):
    code = "configuration"


class InvalidJobError(PermanentError):
    code = "invalid_job"


class JobNotFoundError(PermanentError):
    code = "job_not_found"


class BatchNotFoundError(PermanentError):
    code = "batch_not_found"


# --- storage ----------------------------------------------------------------------------------------------------
class UnsupportedURLError(PermanentError):
    code = "unsupported_url"


class InputNotFoundError(PermanentError):
    code = "input_not_found"


class StorageAccessError(PermanentError):
    """The store answered but refused (403, bad credentials, no such bucket)."""

    code = "storage_access"


class TransientStorageError(TransientError):
    """The store timed out, throttled or answered 5xx after boto's own retries."""

    code = "storage_unavailable"


# --- images -----------------------------------------------------------------------------------------------------
class ImageDecodeError(PermanentError):
    """Corrupt, truncated or not an image at all."""

    code = "image_decode"


class UnsupportedImageError(PermanentError):
    """A valid image we deliberately do not process (e.g. animated, unsupported mode)."""

    code = "image_unsupported"


class ImageTooLargeError(PermanentError):
    """More pixels than the configured limit (decompression-bomb guard)."""

    code = "image_too_large"


class ImageEncodeError(PermanentError):
    code = "image_encode"


class DocumentTooLargeError(PermanentError):
    """A PDF or multi-page TIFF with more pages than IMGRESTORE_MAX_DOCUMENT_PAGES."""

    code = "document_too_large"


# --- models -----------------------------------------------------------------------------------------------------
class ModelNotFoundError(PermanentError):
    code = "model_not_found"


class ModelChecksumError(PermanentError):
    code = "model_checksum"


class ModelManifestError(PermanentError):
    code = "model_manifest"


class InferenceError(PermanentError):
    code = "inference"


# --- delivery ---------------------------------------------------------------------------------------------------
class DeliveryLimitError(PermanentError):
    """The job's worker was lost too many times (e.g. it exhausts memory on every try)."""

    code = "delivery_limit"


# --- submission ---------------------------------------------------------------------------------------------------
class QueueFullError(TransientError):
    """A cap on queued jobs (IMGRESTORE_MAX_QUEUED_JOBS, IMGRESTORE_MAX_QUEUED_JOBS_PER_QUEUE) is reached."""

    code = "queue_full"

    def __init__(self, message: str, scope: str, waiting: int, cap: int) -> None:
        super().__init__(message)
        self.scope = scope  # "global" or the queue's name
        self.waiting = waiting
        self.cap = cap


class QuotaExceededError(QueueFullError):
    """A per-token quota (IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN, IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN)
    is reached; ``retry_after``: seconds until a retry may pass."""

    code = "quota_exceeded"

    def __init__(self, message: str, scope: str, waiting: int, cap: int, retry_after: int = 30) -> None:
        super().__init__(message, scope, waiting, cap)
        self.retry_after = retry_after
