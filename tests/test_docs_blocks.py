"""Every ```python block of docs/models.md runs as written, on tiny briefly trained folders at the paths the blocks
name (`outputs/...`, relative to the working directory). A block that does not import hf_ae runs in a process where
`import hf_ae` fails, because the page promises that those work with remote code alone; the latent diffusion block
imports hf_ae and runs with it."""

import re

import pytest
from subprocess_env import REPO_ROOT, isolated_env, run_python

from hf_ae.training import parse_args, train

DOCS = REPO_ROOT / "docs" / "models.md"
COMMON = ["--max_train_samples", "64", "--max_eval_samples", "16", "--per_device_train_batch_size", "16",
          "--num_sample_images", "4", "--probe", "False", "--seed", "0"]
TINY_VIT = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"


def docs_python_blocks() -> list[str]:
    text = DOCS.read_text()
    return [block.split("```")[0] for block in text.split("```python\n")[1:]]


def train_folders(root):
    """The folders the blocks load, under root/outputs, as `hf-ae train` writes them (tiny configs, a few steps)."""
    outputs = root / "outputs"
    runs = {
        "funnel-python-lines": ["--model", "funnel_vae", "--dataset", "python-lines", "--max_steps", "2",
                                "--config_overrides", "hidden_size=16,intermediate_size=32,num_attention_heads=2,"
                                "decoder_num_attention_heads=2,block_sizes=[1,1],latent_dim=4,num_latent_tokens=4,"
                                "decoder_num_hidden_layers=1"],
        "unet-digits": ["--model", "unet_ae", "--dataset", "digits", "--image_size", "16", "--max_steps", "2",
                        "--config_overrides", "block_out_channels=[8,16],norm_num_groups=4"],
        "vq-digits": ["--model", "patch_vae", "--dataset", "digits", "--max_steps", "10", "--config_overrides",
                      f"bottleneck=vq,codebook_size=16,latent_dim=4,patch_size=2,{TINY_VIT}"],
        "patch-vae-digits": ["--model", "patch_vae", "--dataset", "digits", "--max_steps", "2", "--config_overrides",
                             f"bottleneck=kl,latent_dim=2,patch_size=4,{TINY_VIT}"],
    }
    for name, argv in runs.items():
        train(*parse_args([*argv, "--output_dir", str(outputs / name), *COMMON]))
    train(*parse_args(["--model", "patch_prior", "--autoencoder", str(outputs / "vq-digits"), "--dataset", "digits",
                       "--class_conditional", "--max_steps", "2", "--config_overrides", TINY_VIT, "--output_dir",
                       str(outputs / "prior-digits"), *COMMON]))


@pytest.mark.slow
def test_models_page_blocks_run_as_written(tmp_path):
    blocks = docs_python_blocks()
    assert len(blocks) == 4, "docs/models.md's blocks changed: update the expectations below"
    train_folders(tmp_path)
    # the blocks that do not import hf_ae run in one process where it cannot be imported, the others in another;
    # a marker line between blocks splits what each printed
    marker = "----- next block -----"
    groups = {True: [], False: []}
    for index, block in enumerate(blocks):
        groups[re.search(r"^\s*(from|import) hf_ae\b", block, re.MULTILINE) is not None].append(index)
    printed = {}
    for uses_hf_ae, indices in groups.items():
        prelude = "" if uses_hf_ae else 'import sys\nsys.modules["hf_ae"] = None  # the page: no hf_ae needed\n'
        script = tmp_path / f"blocks_{'with' if uses_hf_ae else 'without'}_hf_ae.py"
        script.write_text(prelude + f"\nprint({marker!r})\n".join(blocks[index] for index in indices))
        result = run_python([str(script)], isolated_env(tmp_path), cwd=tmp_path)
        assert result.returncode == 0, f"blocks {indices}:\n{result.stderr[-3000:]}"
        outputs = [part.strip().splitlines() for part in result.stdout.split(marker)]
        assert len(outputs) == len(indices), result.stdout
        printed.update(zip(indices, outputs))
    printed = [printed[index] for index in range(len(blocks))]
    assert groups[True] == [3], "only the latent diffusion block imports hf_ae"

    text, unet, prior, diffusion = printed
    assert text[0].startswith("torch.Size([2, 4, 4]) ")  # 2 texts, 4 latent tokens of 4
    assert text[1].startswith("{'ratio': 0.0, 'text': ") and "'valid': " in text[1]
    assert text[2].startswith("{'text': ")
    assert unet[0] == "torch.Size([8, 1, 16, 16]) torch.Size([16, 1, 16, 16]) torch.Size([30, 16, 1, 16, 16])"
    assert unet[1] == "['denoised', 'noisy'] 16 61"
    assert (tmp_path / "outputs" / "walk.gif").read_bytes()[:6] == b"GIF89a"
    assert prior == ["torch.Size([4, 1, 8, 8]) torch.Size([4, 16]) torch.Size([17, 4, 1, 8, 8])",
                     "10 torch.Size([4, 16]) True"]
    assert (tmp_path / "outputs" / "filling.gif").read_bytes()[:6] == b"GIF89a"
    assert diffusion == ["torch.Size([16, 1, 8, 8]) True True"]
