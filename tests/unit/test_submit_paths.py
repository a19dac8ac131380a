"""``imgrestore submit`` names local files where it runs (issue 10, bug 8): a relative path is made absolute at
submission, since the worker resolves paths in its own working folder (often on another machine)."""

from __future__ import annotations


import pytest
from click.testing import CliRunner

from services.cli import submit as submit_verb
from services.cli.common import cli
from services.config import Settings
from services.jobs import Job
from services.storage import LocalStorage, local_path
from tests.support.namespaces import isolated_settings, isolated_store


@pytest.fixture()
def config(redis_url: str) -> Settings:
    return isolated_settings(redis_url, "sp")


@pytest.fixture()
def store(config: Settings):
    yield from isolated_store(config)


def test_a_relative_input_and_output_are_resolved_where_submit_runs(config, store, tmp_path, monkeypatch):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "page 1.png").write_bytes(b"pixels")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit_verb, "settings", lambda: config)

    result = CliRunner().invoke(cli, ["submit", "--task", "denoise", "--json", "--output", "clean/page1.png",
                                      "./scans/page 1.png"])

    assert result.exit_code == 0, (result.stdout, result.stderr)
    job = store.get(Job.model_validate_json(result.stdout).id)
    # Before the fix the record kept "./scans/page 1.png", read from the worker's own working folder.
    assert job.input_url == (tmp_path / "scans" / "page 1.png").as_uri()
    assert local_path(job.output_url) == tmp_path / "clean" / "page1.png"
    monkeypatch.chdir("/")  # a worker somewhere else reads the same file
    assert LocalStorage().read(job.input_url) == b"pixels"


def test_default_output_of_a_resolved_input_stays_next_to_it(config, store, tmp_path, monkeypatch):
    (tmp_path / "p.png").write_bytes(b"pixels")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit_verb, "settings", lambda: config)
    result = CliRunner().invoke(cli, ["submit", "--task", "denoise", "--json", "p.png"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    job = store.get(Job.model_validate_json(result.stdout).id)
    assert local_path(job.output_url) == tmp_path / "restored" / "denoise-auto" / "p.png"


def test_only_relative_local_paths_change():
    from services.storage import resolve_local_url

    assert resolve_local_url("/data/p.png") == "/data/p.png"
    assert resolve_local_url("file:///data/p.png") == "file:///data/p.png"
    assert resolve_local_url("s3://bucket/p.png") == "s3://bucket/p.png"
