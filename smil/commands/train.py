"""``smil train``: train a single- or multi-view regressor from a config file."""

from __future__ import annotations

import argparse
import logging
import os
import socket


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a regressor (mode from the config)",
        description="Train a single- or multi-view regressor. Launch with torchrun or srun for DDP, "
        "or pass --num-gpus N to spawn N local processes.",
    )
    p.add_argument("--config", required=True, help="training config (JSON or YAML) with a 'mode'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (dotted key, YAML value); repeatable")
    p.add_argument("--out", required=True, help="output folder (model.pt, history.csv, checkpoints/)")
    p.add_argument("--resume", action="store_true",
                   help="require resuming from OUT/checkpoints/last.pt (a run with the same config resumes automatically)")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="spawn this many local processes when not launched by torchrun/srun")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smil.config import load_config
    from smil.train.distributed import detect

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    if args.num_gpus > 1 and not detect().distributed:
        import torch.multiprocessing as mp

        port = _free_port()
        mp.spawn(_spawned, args=(args.num_gpus, port, args), nprocs=args.num_gpus, join=True)
        return 0
    from smil.train.loop import train

    path = train(cfg, args.out, resume=args.resume, where=args.config)
    if detect().is_main:
        print(f"wrote {path}")
    return 0


def _spawned(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    args.num_gpus = 1
    run(args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
