"""Small image folders and tiny model configs for the tests that train on image files and streams."""

import numpy as np
from PIL import Image

TINY_PATCH_VAE = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32,patch_size=4"
TINY_FUNNEL_VAE = ("hidden_size=16,intermediate_size=32,num_attention_heads=2,decoder_num_attention_heads=2,"
                   "block_sizes=[1,1],decoder_num_hidden_layers=1,latent_dim=4,num_latent_tokens=4")


def make_photo_folder(root, count=24):
    """root/{a,b}/i.png: `count` 20x12 RGB images of seeded noise (not square: --resolution crops them)."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(count // 2):
            Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root
