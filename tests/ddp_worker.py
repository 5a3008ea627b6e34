"""Run under torchrun by tests/test_train.py: train with the real Trainer, then every rank saves its
own weights so the test can compare ranks and a single-process run."""

from __future__ import annotations

import sys

import torch

from smil.config import load_config
from smil.train import distributed as D
from smil.train.loop import Trainer


def main() -> None:
    config, out, *overrides = sys.argv[1:]
    info = D.detect()
    D.init(info)
    trainer = Trainer(load_config(config, overrides), out)
    trainer.fit()
    torch.save({k: v.cpu() for k, v in trainer.model.state_dict().items()}, f"{out}/rank{info.rank}.pt")
    D.cleanup(info)


if __name__ == "__main__":
    main()
