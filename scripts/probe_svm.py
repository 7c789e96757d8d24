#!/usr/bin/env python
"""SVM latent probe: the installed `hf-ae probe` command, for a source checkout.

    python scripts/probe_svm.py --model outputs/demo/patch-vae-digits --dataset digits
"""

import sys

from hf_ae.cli import probe_main as main

if __name__ == "__main__":
    sys.exit(main())
