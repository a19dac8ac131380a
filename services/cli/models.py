"""``imgrestore models verify``: check the model files before serving (container start, a new model folder).

The registry already verifies a model's sha256 when a worker first loads it, but that is one job into the worker's
life, and a bad file then fails jobs. Containers run this at start instead (deploy/docker/entrypoint.sh): every file
listed in manifest.json is hashed, loaded into an ONNX Runtime session with the configured providers and run once on
a small zero tile, so a corrupt file, a broken runtime or a GPU image that silently fell back to CPU stops the
container before it takes work.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click

from ..errors import ImgRestoreError
from ..inference.registry import ModelRegistry, ModelSpec, choose_providers, load_manifest, sha256_file
from .common import EXIT_FAILED, EXIT_USAGE, cli, echo_json, fail, settings

SMOKE_SIDE = 32  # pixels: the smoke tile is the smallest multiple of the model's `multiple_of` at least this big


@cli.group()
def models() -> None:
    """Inspect and verify the models listed in manifest.json (IMGRESTORE_MODEL_DIR)."""


@models.command()
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with manifest.json and the ONNX files (default: IMGRESTORE_MODEL_DIR).")
@click.option("--checksums-only", is_flag=True, help="Check sha256 only; create no ONNX Runtime session.")
@click.option("--require-provider", metavar="PROVIDER",
              help="Fail unless every session runs on this execution provider (e.g. CUDAExecutionProvider).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(model_dir: Path | None, checksums_only: bool, require_provider: str | None, as_json: bool) -> None:
    """Check every model in the manifest: sha256, an ONNX Runtime session with the configured providers
    (IMGRESTORE_PROVIDERS) and one small inference. Exit 1 if any model fails, 2 on a usage error."""
    config = settings()
    folder = Path(model_dir or config.model_dir)
    if checksums_only and require_provider:
        fail("--require-provider needs sessions; drop --checksums-only", EXIT_USAGE)
    try:
        manifest = load_manifest(folder)
    except ImgRestoreError as exc:
        fail(exc.message, EXIT_FAILED)
    if not manifest.models:
        fail(f"{folder / 'manifest.json'} lists no models", EXIT_FAILED)

    registry = None
    if not checksums_only:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if require_provider and require_provider not in available:
            fail(f"{require_provider} is required but this onnxruntime offers only {', '.join(available)}",
                 EXIT_FAILED)
        try:
            choose_providers(config.providers, available)  # a bad IMGRESTORE_PROVIDERS is one message, not N
        except ImgRestoreError as exc:
            fail(exc.message, EXIT_FAILED)
        registry = ModelRegistry.from_settings(config, model_dir=folder)

    results = [_check(spec, folder, registry, require_provider) for spec in manifest.models]
    failed = [r for r in results if r["error"]]
    if as_json:
        echo_json({"model_dir": str(folder), "ok": not failed, "checksums_only": checksums_only,
                   "models": results})
    else:
        for r in results:
            status = "FAILED" if r["error"] else "ok"
            detail = r["error"] or (f"{r['provider']}, {r['load_seconds']:.2f} s" if r["provider"] else "sha256 ok")
            click.echo(f"{status:<7}{r['model']:<32}{r['file']:<28}{detail}")
    if failed:
        for r in failed:
            click.echo(f"error: {r['model']}: {r['error']}", err=True)
        click.echo(f"error: {len(failed)} of {len(results)} models in {folder} failed verification", err=True)
        sys.exit(EXIT_FAILED)
    if not as_json:
        click.echo(f"verified {len(results)} models in {folder}")


def _check(spec: ModelSpec, folder: Path, registry: ModelRegistry | None, require_provider: str | None) -> dict:
    result = {"model": spec.qualified_name, "name": spec.name, "version": spec.version, "file": spec.file,
              "sha256": spec.sha256, "provider": None, "load_seconds": None, "error": None}
    for file, expected in [(spec.file, spec.sha256)] + [(v.file, v.sha256) for v in spec.variants]:
        path = folder / file
        if not path.is_file():
            result["error"] = f"file {path} is missing"
            return result
        actual = sha256_file(path)
        if actual != expected:
            result["error"] = (f"{path} has sha256 {actual}, the manifest says {expected}; the file is corrupt or "
                               "was replaced without updating manifest.json")
            return result
    if registry is None:
        return result
    started = time.perf_counter()
    try:
        loaded = registry.load(spec)
        _smoke(loaded)
    except ImgRestoreError as exc:
        result["error"] = exc.message
        return result
    except Exception as exc:  # onnxruntime raises its own types: report them, keep checking the others
        result["error"] = f"cannot run in ONNX Runtime: {type(exc).__name__}: {exc}"
        return result
    result["provider"] = loaded.provider
    result["model"] = loaded.qualified_name
    result["file"] = loaded.file
    result["load_seconds"] = round(time.perf_counter() - started, 3)
    if require_provider and loaded.provider != require_provider:
        result["error"] = (f"runs on {loaded.provider}, {require_provider} was required (is the GPU visible to "
                           "this container, and do onnxruntime's CUDA and cuDNN libraries load?)")
    return result


def _smoke(loaded) -> None:
    import numpy as np

    spec = loaded.spec
    side = spec.tiling.multiple_of * math.ceil(SMOKE_SIDE / spec.tiling.multiple_of)
    out = loaded.run(np.zeros((1, spec.input.channels, side, side), np.float32))
    expected = (1, spec.output.channels, side, side)
    if tuple(out.shape) != expected:
        raise ValueError(f"a {side}x{side} tile gave output shape {tuple(out.shape)}, expected {expected}")
    if not np.isfinite(out).all():
        raise ValueError("a zero tile gave non-finite output")
