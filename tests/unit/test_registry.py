import json
import shutil

import numpy as np
import pytest

from services.errors import ConfigurationError, ModelChecksumError, ModelManifestError, ModelNotFoundError
from services.inference.registry import ModelRegistry, choose_providers


def test_resolves_each_task_and_profile(tiny_model_dir):
    registry = ModelRegistry(tiny_model_dir)
    assert registry.resolve("denoise", "document").name == "doc-denoise"
    assert registry.resolve("denoise", "photo").name == "photo-denoise"
    assert registry.resolve("colorize").output.channels == 3
    with pytest.raises(ModelNotFoundError, match="no model for denoise/x"):
        registry.resolve("denoise", "x")


def test_session_is_created_once_and_runs(tiny_model_dir):
    registry = ModelRegistry(tiny_model_dir, intra_op_threads=1)
    spec = registry.resolve("watermark")
    first, second = registry.load(spec), registry.load(spec)
    assert first is second and first.provider == "CPUExecutionProvider"
    out = first.run(np.zeros((2, 3, 16, 16), np.float32))
    assert out.shape == (2, 3, 16, 16)


def test_sha256_mismatch_is_a_clear_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_dir, folder)
    path = folder / "doc-denoise.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    registry = ModelRegistry(folder)
    with pytest.raises(ModelChecksumError, match="doc-denoise.*sha256.*manifest says"):
        registry.load(registry.resolve("denoise", "document"))
    # The other models are untouched and still load.
    assert registry.load(registry.resolve("colorize")).provider


def test_manifest_problems_are_reported(tmp_path):
    with pytest.raises(ModelManifestError, match="no model manifest"):
        ModelRegistry(tmp_path).manifest
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "models": [{"name": "x"}]}))
    with pytest.raises(ModelManifestError, match="invalid"):
        ModelRegistry(tmp_path).manifest


def test_provider_choice():
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    with pytest.raises(ConfigurationError, match="imgrestore\\[gpu\\]"):
        choose_providers("CUDAExecutionProvider", ["CPUExecutionProvider"])


def _loaded(model_dir, task: str, **kwargs):
    registry = ModelRegistry(model_dir, intra_op_threads=1, **kwargs)
    return registry.load(registry.resolve(task))


def _uses_shared_arena(options) -> bool:
    try:
        return options.get_session_config_entry("session.use_env_allocators") == "1"
    except RuntimeError:  # not set
        return False


@pytest.mark.parametrize("arena", ["shared", "per-model", "off"])
def test_each_cpu_arena_setting_reaches_the_session_and_changes_no_output(tiny_model_dir, arena):
    model = _loaded(tiny_model_dir, "watermark", cpu_arena=arena)
    options = model.session.get_session_options()
    assert options.enable_cpu_mem_arena == (arena != "off")
    assert _uses_shared_arena(options) == (arena == "shared")
    batch = np.random.default_rng(3).random((2, 3, 40, 24), dtype=np.float32)
    reference = _loaded(tiny_model_dir, "watermark", cpu_arena="per-model")
    np.testing.assert_array_equal(model.run(batch), reference.run(batch))
