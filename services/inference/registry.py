"""Model manifest, sha256 verification and lazily created ONNX Runtime sessions (one per model per process)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import CpuArena
from ..errors import ConfigurationError, ModelChecksumError, ModelManifestError, ModelNotFoundError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class TensorSpec(BaseModel):
    """One input or output of a model: float32, NCHW, dynamic batch/height/width."""

    name: str
    channels: Literal[1, 3]
    color_space: Literal["gray", "rgb"]
    value_range: tuple[float, float] = (0.0, 1.0)
    layout: Literal["NCHW"] = "NCHW"


class TilingSpec(BaseModel):
    tile_size: int = Field(256, ge=32)
    overlap: int = Field(32, ge=0)
    multiple_of: int = Field(8, ge=1, description="Height and width fed to the model must be multiples of this.")


class VariantSpec(BaseModel):
    """Another file of the same model — e.g. statically quantised to int8 — and the providers it is for."""

    model_config = ConfigDict(extra="allow")

    precision: Literal["int8", "fp16"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    providers: list[str] = ["CPUExecutionProvider"]


class ModelSpec(BaseModel):
    """One entry of ``manifest.json``. Extra keys (architecture, metrics, training…) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str = "1"
    task: Literal["denoise", "colorize", "watermark"]
    profile: Literal["document", "photo"] | None = None
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: TensorSpec
    output: TensorSpec
    tiling: TilingSpec = TilingSpec()
    variants: list[VariantSpec] = []

    @property
    def qualified_name(self) -> str:
        return f"{self.name}@{self.version}"

    def variant_for(self, precision: str, provider: str) -> VariantSpec | None:
        """The file to run: ``auto`` takes a variant made for ``provider``, ``fp32`` the base file (None)."""
        if precision == "fp32":
            return None
        for variant in self.variants:
            if variant.precision == precision or (precision == "auto" and provider in variant.providers):
                return variant
        if precision != "auto":
            raise ModelNotFoundError(f"model {self.name} has no {precision} variant (IMGRESTORE_PRECISION)")
        return None


class Manifest(BaseModel):
    schema_version: Literal[1] = 1
    models: list[ModelSpec]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(model_dir: Path) -> Manifest:
    path = Path(model_dir) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelManifestError(f"no model manifest at {path}; set IMGRESTORE_MODEL_DIR to a folder with one")
    except json.JSONDecodeError as exc:
        raise ModelManifestError(f"model manifest {path} is not valid JSON: {exc}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ModelManifestError(f"model manifest {path} is invalid: {exc}")


def choose_providers(setting: str, available: list[str]) -> list[str]:
    """'auto' picks CUDA when this onnxruntime build offers it (CPU stays as the fallback), else CPU."""
    if setting.strip().lower() == "auto":
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    wanted = [p.strip() for p in setting.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ConfigurationError(
            f"IMGRESTORE_PROVIDERS asks for {', '.join(missing)}, but this onnxruntime offers only "
            f"{', '.join(available)} (install imgrestore[gpu] for CUDA)"
        )
    return wanted


@dataclass
class LoadedModel:
    spec: ModelSpec
    session: Any  # onnxruntime.InferenceSession
    provider: str
    load_seconds: float
    precision: str = "fp32"
    file: str = ""  # the ONNX file the session runs (a variant's, when one was chosen)

    @property
    def qualified_name(self) -> str:
        """``name@version``, plus ``+int8`` (etc.) when a variant runs: what job records show."""
        suffix = "" if self.precision == "fp32" else f"+{self.precision}"
        return f"{self.spec.qualified_name}{suffix}"

    def run(self, batch: Any) -> Any:
        return self.session.run([self.spec.output.name], {self.spec.input.name: batch})[0]


# Where ONNX Runtime keeps CPU tensors between runs (IMGRESTORE_CPU_ARENA). Measured over 150 mixed jobs (four
# models, 0.05-4 MP, one thread, heap trimmed after each) in one process, RSS between jobs from job 30 to 150:
# "per-model" (ORT's default: an arena per session) 1 269 -> 1 371 MiB and still growing, as tile shapes vary;
# "shared" (one arena that every session of the process uses) 688 -> 689 MiB, as fast (98.9 s against 101.8);
# "off" 147 -> 149 MiB, 12 % slower (114 s).
_shared_arena_lock = threading.Lock()
_shared_arena_registered = False


def use_cpu_arena(ort: Any, options: Any, arena: CpuArena) -> None:
    """Sets ``options`` (a new session's) to keep its CPU tensors as ``arena`` says."""
    global _shared_arena_registered
    if arena == "off":
        options.enable_cpu_mem_arena = False
    elif arena == "shared":
        with _shared_arena_lock:  # once per process: the one arena that all its sessions share
            if not _shared_arena_registered:
                next_power_of_two = 0  # ORT's own growth rule: as fast as "same as asked", 6 % smaller
                memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(memory, ort.OrtArenaCfg({"arena_extend_strategy": next_power_of_two}))
                _shared_arena_registered = True
        options.add_session_config_entry("session.use_env_allocators", "1")


class ModelRegistry:
    """Finds models through the manifest and keeps one verified session per model for this process."""

    def __init__(
        self,
        model_dir: Path,
        providers: str = "auto",
        intra_op_threads: int = 0,
        on_load: Callable[[LoadedModel], None] | None = None,
        precision: str = "auto",
        cpu_arena: CpuArena = "shared",
    ) -> None:
        self.model_dir = Path(model_dir)
        self.providers_setting = providers
        self.precision = precision
        self.intra_op_threads = intra_op_threads
        self.cpu_arena = cpu_arena
        self.on_load = on_load
        self._manifest: Manifest | None = None
        self._sessions: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, on_load: Callable[[LoadedModel], None] | None = None,
                      model_dir: Path | None = None) -> "ModelRegistry":
        return cls(model_dir or settings.model_dir, settings.providers, settings.intra_op_threads, on_load,
                   settings.precision, settings.cpu_arena)

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.model_dir)
        return self._manifest

    def resolve(self, task: str, profile: str | None = None) -> ModelSpec:
        """The model that serves ``task`` (and, for denoise, ``profile``)."""
        for spec in self.manifest.models:
            if spec.task == task and (profile is None or spec.profile in (None, profile)):
                return spec
        wanted = task if profile is None else f"{task}/{profile}"
        have = ", ".join(f"{m.name} ({m.task}/{m.profile or '-'})" for m in self.manifest.models) or "none"
        raise ModelNotFoundError(f"no model for {wanted} in {self.model_dir / MANIFEST_NAME} (have: {have})")

    def get(self, name: str) -> ModelSpec:
        for spec in self.manifest.models:
            if spec.name == name:
                return spec
        raise ModelNotFoundError(f"no model named {name!r} in {self.model_dir / MANIFEST_NAME}")

    def load(self, spec: ModelSpec) -> LoadedModel:
        """The session for ``spec``, created (and its file sha256-verified) on first use."""
        with self._lock:
            loaded = self._sessions.get(spec.name)
            if loaded is None:
                loaded = self._create(spec)
                self._sessions[spec.name] = loaded
                if self.on_load is not None:
                    self.on_load(loaded)
            return loaded

    def loaded(self) -> list[LoadedModel]:
        return list(self._sessions.values())

    def _create(self, spec: ModelSpec) -> LoadedModel:
        import onnxruntime as ort  # imported here so that settings/CLI work without a runtime installed

        providers = choose_providers(self.providers_setting, ort.get_available_providers())
        variant = spec.variant_for(self.precision, providers[0])
        file, sha256 = (variant.file, variant.sha256) if variant else (spec.file, spec.sha256)
        path = self.model_dir / file
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} for {spec.name} is missing")
        started = time.perf_counter()
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ModelChecksumError(
                f"model {spec.name}: {path} has sha256 {actual}, the manifest says {sha256}; "
                "the file is corrupt or was replaced without updating manifest.json"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        use_cpu_arena(ort, options, self.cpu_arena)
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
        loaded = LoadedModel(spec=spec, session=session, provider=session.get_providers()[0],
                             load_seconds=time.perf_counter() - started,
                             precision=variant.precision if variant else "fp32", file=file)
        log.info("model loaded", extra={"model": loaded.qualified_name, "provider": loaded.provider,
                                        "seconds": loaded.load_seconds})
        return loaded
