#!/usr/bin/env python
"""Export an image model's encode and decode (torch.export, ONNX): the installed `hf-ae export` command, for a source
checkout.

    python scripts/export.py --model outputs/demo/patch-vae-digits --output_dir exported/
"""

import sys

from hf_ae.cli import export_main as main

if __name__ == "__main__":
    sys.exit(main())
