"""``python -m training train NAME …``, ``python -m training resume MODEL --minutes N`` and ``python -m training samples``."""

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
    r = sub.add_parser("resume", help="one training leg of a shipped model from its promoted weights, then the "
                                      "promotion gate (evaluate; export, quantise and ship only if it improved)")
    r.add_argument("model", choices=MODEL_NAMES)
    r.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the leg")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--lr", type=float, help="peak LR of the warm restart (default: the config's)")
    r.add_argument("--workers", type=int, default=1, help="data-generation processes (0: in-process)")
    r.add_argument("--no-bf16", action="store_true", help="train in fp32 even where the CPU has bf16")
    r.add_argument("--no-promote", action="store_true", help="train only; promote later with `promote`")
    r.add_argument("--run-dir", type=Path, help="default training/runs/MODEL-leg")
    g = sub.add_parser("promote", help="the promotion gate for a finished leg (see resume)")
    g.add_argument("model", choices=MODEL_NAMES)
    g.add_argument("--run-dir", type=Path, help="default training/runs/MODEL-leg")
    g.add_argument("--int8-only", action="store_true",
                   help="the shipped model's int8 variant only, made again (after a change of export/quantize.py)")
    s = sub.add_parser("samples", help="write the demo images under samples/")
    s.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args(argv)

    if args.cmd == "train":
        from .train import train

        cfg = TrainConfig.load(args.config or default_config_path(args.name))
        path = train(cfg, run_dir=args.run_dir, max_steps=args.steps, progress=not args.no_progress,
                     threads=args.threads)
        print(f"saved {path}")
    elif args.cmd == "resume":
        from .legs import LEGS_LOG, LegSettings, leg_count, run_leg

        settings = LegSettings(minutes=args.minutes, threads=args.threads, lr=args.lr, workers=args.workers,
                               bf16=not args.no_bf16)
        model_pt = run_leg(args.model, settings, run_dir=args.run_dir, leg_index=leg_count(args.model, LEGS_LOG))
        if not args.no_promote:
            from .promote import promote_leg

            promote_leg(args.model, model_pt)
    elif args.cmd == "promote":
        from .config import RUNS_DIR
        from .promote import promote_leg, remake_int8

        run_dir = args.run_dir or RUNS_DIR / f"{args.model}-leg"
        if args.int8_only:
            remake_int8(args.model, run_dir)
        else:
            promote_leg(args.model, run_dir / "model.pt")
    elif args.cmd == "samples":
        from .samples import write_samples

        for p in write_samples(args.out):
            print(p)


if __name__ == "__main__":
    main()
