"""`imgrestore models verify`: what containers run at start (deploy/docker/entrypoint.sh)."""

import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner

from services.cli import cli
from services.config import PACKAGED_MODEL_DIR, get_settings
from tests.support.onnx_models import TINY_MODELS


@pytest.fixture()
def run(monkeypatch):
    """Invokes the real `imgrestore` group with fresh settings (IMGRESTORE_* read from this test's environment)."""
    monkeypatch.delenv("IMGRESTORE_MODEL_DIR", raising=False)
    monkeypatch.delenv("IMGRESTORE_PROVIDERS", raising=False)
    get_settings.cache_clear()

    def invoke(*args, **env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return CliRunner().invoke(cli, ["models", "verify", *args])

    yield invoke
    get_settings.cache_clear()


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_every_model_is_hashed_loaded_and_run(run, tiny_model_dir):
    result = run("--model-dir", str(tiny_model_dir))
    assert result.exit_code == 0, result.output
    for name, *_ in TINY_MODELS:
        assert f"{name}@test" in result.stdout
    assert result.stdout.count("CPUExecutionProvider") == len(TINY_MODELS)
    assert f"verified {len(TINY_MODELS)} models" in result.stdout


def test_model_dir_comes_from_settings(run, tiny_model_dir):
    result = run("--json", IMGRESTORE_MODEL_DIR=str(tiny_model_dir))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["model_dir"] == str(tiny_model_dir)
    assert [m["name"] for m in report["models"]] == [name for name, *_ in TINY_MODELS]
    assert all(m["provider"] == "CPUExecutionProvider" and m["error"] is None for m in report["models"])


def test_checksum_mismatch_fails_with_a_clear_message_and_the_others_are_still_checked(run, model_copy):
    path = model_copy / "colorize.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    result = run("--model-dir", str(model_copy), "--json")
    assert result.exit_code == 1
    assert "colorize@test" in result.stderr and "manifest says" in result.stderr
    assert "1 of 4 models" in result.stderr
    by_name = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert "sha256" in by_name["colorize"]["error"]
    assert all(by_name[n]["error"] is None for n in ("doc-denoise", "photo-denoise", "watermark"))


def test_missing_file_and_missing_manifest_fail(run, model_copy, tmp_path):
    (model_copy / "watermark.onnx").unlink()
    result = run("--model-dir", str(model_copy))
    assert result.exit_code == 1 and "watermark.onnx is missing" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("--model-dir", str(empty))
    assert result.exit_code == 1 and "no model manifest" in result.stderr


def test_a_file_onnx_runtime_cannot_load_fails_even_with_a_matching_checksum(run, model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    junk = b"not an onnx graph"
    (model_copy / "doc-denoise.onnx").write_bytes(junk)
    manifest["models"][0]["sha256"] = hashlib.sha256(junk).hexdigest()
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    result = run("--model-dir", str(model_copy))
    assert result.exit_code == 1
    assert "doc-denoise@test: cannot run in ONNX Runtime" in result.stderr
    # --checksums-only is what an image without sessions (the API) runs: the checksum matches, so it passes.
    assert run("--model-dir", str(model_copy), "--checksums-only").exit_code == 0


def test_checksums_only_creates_no_session(run, tiny_model_dir, monkeypatch):
    import services.cli.models as verb

    monkeypatch.setattr(verb, "ModelRegistry", None)  # any session attempt would raise
    result = run("--model-dir", str(tiny_model_dir), "--checksums-only", "--json")
    assert result.exit_code == 0, result.output
    assert all(m["provider"] is None for m in json.loads(result.stdout)["models"])


def test_required_provider(run, tiny_model_dir):
    assert run("--model-dir", str(tiny_model_dir), "--require-provider", "CPUExecutionProvider").exit_code == 0
    result = run("--model-dir", str(tiny_model_dir), "--require-provider", "CUDAExecutionProvider")
    assert result.exit_code == 1
    assert "CUDAExecutionProvider is required but this onnxruntime offers only" in result.stderr


def test_configured_providers_are_used_and_a_bad_setting_is_one_message(run, tiny_model_dir):
    result = run("--model-dir", str(tiny_model_dir), IMGRESTORE_PROVIDERS="CUDAExecutionProvider")
    assert result.exit_code == 1
    assert "IMGRESTORE_PROVIDERS asks for CUDAExecutionProvider" in result.stderr
    assert result.stderr.count("error:") == 1


def test_usage_errors_exit_2(run, tiny_model_dir):
    result = run("--model-dir", str(tiny_model_dir), "--checksums-only", "--require-provider", "X")
    assert result.exit_code == 2


def test_the_shipped_models_pass(run):
    # What the images run at start, against the models baked into them.
    result = run("--checksums-only")
    assert result.exit_code == 0, result.output


def test_shipped_models_report_the_file_each_session_runs(run):
    shipped = PACKAGED_MODEL_DIR
    result = run("--model-dir", str(shipped), "--json", IMGRESTORE_PRECISION="auto")
    assert result.exit_code == 0, result.output
    variants = {m["name"]: [v["precision"] for v in m.get("variants", [])]
                for m in json.loads((shipped / "manifest.json").read_text())["models"]}
    assert any("int8" in v for v in variants.values())
    for model in json.loads(result.stdout)["models"]:
        if "int8" in variants[model["name"]]:  # on CPU, auto serves the int8 variant where one ships
            assert model["model"].endswith("+int8") and model["file"] == f"{model['name']}-int8.onnx", model
        else:  # photo-denoise: its int8 variant lost bars, so none ships
            assert model["file"] == f"{model['name']}.onnx", model
    result = run("--model-dir", str(shipped), "--json", IMGRESTORE_PRECISION="fp32")
    assert all(m["file"] == f"{m['name']}.onnx" for m in json.loads(result.stdout)["models"])
