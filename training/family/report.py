"""The family results table, as markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS: tuple[tuple[str, str], ...] = (
    ("test_mse", "test MSE"),
    ("noisy_test_mse", "noisy-input MSE"),
    ("mean_activation", "mean activation"),
    ("inactive_fraction", "inactive (<1e-3)"),
    ("jacobian_frobenius", "‖∂h/∂x‖_F"),
    ("neg_elbo", "−ELBO (nats)"),
)


def _text(value: str) -> str:
    return value.replace("|", "\\|")  # a literal pipe would split the table cell


def _cell(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        "# Autoencoder family results",
        "",
        f"Data: {cfg['source']} glyphs, {cfg['n_train']} train / {cfg['n_test']} test images (28×28, [0, 1]); "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, Adam, seed {cfg['seed']}. "
        f"Noisy-input MSE: inputs corrupted with {cfg['noise']}, error against the clean images.",
        "",
        "| member | objective | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    base = results["baseline"]
    lines.append(
        "| mean image | predict the training mean | " + " | ".join(_cell(base.get(key)) for key, _ in COLUMNS) + " |"
    )
    for name, row in results["members"].items():
        cells = " | ".join(_cell(row[key]) for key, _ in COLUMNS)
        lines.append(f"| {name} | {_text(row['summary'])} | {cells} |")
    lines += [
        "",
        "Mean activation is over units and test images (the KL-sparse target is ρ = "
        f"{cfg['kl_rho']}); ‖∂h/∂x‖_F is the exact encoder Jacobian norm, mean over test images.",
        "",
        "Figures: `reconstructions.png`, `denoising.png`, `vae_samples.png`, `vae_interpolation.png`.",
        "",
    ]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "report.md", out / "report.json"
    md_path.write_text(markdown(results), encoding="utf-8")
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return md_path, json_path
