#!/usr/bin/env python
"""Train an hf_ae model: the installed `hf-ae train` command, for a source checkout.

    python scripts/train.py --model patch_vae --dataset digits --max_steps 30 --output_dir outputs/pv
    python scripts/train.py --config configs/patch_vae_digits.yaml --learning_rate 3e-4
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...   # or torchrun --nproc_per_node 2

Run with --help for every argument. The loop itself is hf_ae.training.trainer.train.
"""

import sys

from hf_ae.cli import train_main


def main(argv=None):
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
