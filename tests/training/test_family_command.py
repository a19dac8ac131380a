"""`python -m training.family`: trains members and writes the report and figures."""

from __future__ import annotations

import json

from PIL import Image

from training.family.command import main
from training.family.members import family


def test_command_writes_report_json_and_pngs(tmp_path) -> None:
    out = tmp_path / "family"
    results = main(["--out", str(out), "--epochs", "1", "--max-train", "128", "--max-test", "64"])
    assert (out / "report.md").read_text().startswith("# Autoencoder family results")
    data = json.loads((out / "report.json").read_text())
    assert set(data["members"]) == set(family())
    assert data == json.loads(json.dumps(results))
    assert data["members"]["contractive"]["jacobian_frobenius"] > 0
    assert data["members"]["vae"]["neg_elbo"] > 0
    for name in ("reconstructions", "denoising", "vae_samples", "vae_interpolation"):
        with Image.open(out / f"{name}.png") as img:
            assert img.width > 28 and img.height > 28
    md = (out / "report.md").read_text()
    assert all(f"| {name} |" in md for name in data["members"])


def test_command_can_train_a_subset(tmp_path) -> None:
    out = tmp_path / "sub"
    results = main(["--out", str(out), "--epochs", "1", "--max-train", "64", "--max-test", "32", "--members", "dense"])
    assert list(results["members"]) == ["dense"]
    assert not (out / "vae_samples.png").exists()
