"""``python -m training train NAME [--config PATH] [--steps N] [--run-dir DIR]`` and ``python -m training samples``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import MODEL_NAMES, TrainConfig, default_config_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (or resume) one production model")
    t.add_argument("name", help=f"config name: one of {', '.join(MODEL_NAMES)} or any training/configs/*.json")
    t.add_argument("--config", type=Path, help="config file (default training/configs/NAME.json)")
    t.add_argument("--steps", type=int, help="stop after this many steps (the LR schedule keeps the config's)")
    t.add_argument("--run-dir", type=Path, help="where checkpoints go (default training/runs/NAME)")
    t.add_argument("--threads", type=int, help="torch threads (default: the config's; 1 when sharing cores)")
    t.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("samples", help="write the demo images under samples/")
    s.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args(argv)

    if args.cmd == "train":
        from .train import train

        cfg = TrainConfig.load(args.config or default_config_path(args.name))
        path = train(cfg, run_dir=args.run_dir, max_steps=args.steps, progress=not args.no_progress,
                     threads=args.threads)
        print(f"saved {path}")
    elif args.cmd == "samples":
        from .samples import write_samples

        for p in write_samples(args.out):
            print(p)


if __name__ == "__main__":
    main()
