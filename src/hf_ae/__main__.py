"""`python -m hf_ae <command> ...`: the `hf-ae` command (hf_ae.cli), also for `accelerate launch -m hf_ae train ...`."""

import sys

from .cli import main

sys.exit(main())
