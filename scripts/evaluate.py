#!/usr/bin/env python
"""Evaluate any hf_ae model: the installed `hf-ae evaluate` command, for a source checkout.

    python scripts/evaluate.py --model outputs/demo/patch-vae-digits --dataset digits --tasks reconstruction,probe
"""

import sys
from pathlib import Path

# This file is named evaluate.py, and Python puts its folder first on sys.path: without this, `import evaluate`
# (the Hugging Face library, used by hf_ae's metrics) would import this script instead.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from hf_ae.cli import evaluate_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
