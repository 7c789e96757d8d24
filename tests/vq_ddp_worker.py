"""Run by tests/test_patch_vq_training.py under torchrun: in every process, a few Accelerate training steps of a
vq PatchVae on digits for each configuration below, after which each rank writes that model's codebook
(<configuration>_rank<i>.safetensors in the folder argv[1]). One launch serves every configuration: starting two
processes and their gloo group costs more than the training.

argv: OUTPUT_DIR
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.data import load_dataset_for_training

# configuration name -> (vq_sync_codebook, vq_ema)
CONFIGURATIONS = {"synced_ema": (True, True), "synced_learned": (True, False), "unsynced_ema": (False, True)}


def train_one(accelerator, data, sync: bool, ema: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    config = PatchVaeConfig(
        image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        latent_dim=4, bottleneck="vq", codebook_size=16, vq_sync_codebook=sync, vq_ema=ema,
    )
    model = PatchVaeModel(config)
    loader = DataLoader(data, batch_size=16, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    for step, batch in zip(range(8), loader):
        # a different generator per rank, as in the trainer: restart rows differ unless broadcast
        generator = torch.Generator().manual_seed(1000 * step + accelerator.process_index)
        loss = model(pixel_values=batch["pixel_values"], generator=generator).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    bottleneck = accelerator.unwrap_model(model).bottleneck
    tensors = {"codebook": bottleneck.codebook.detach().contiguous(), "cluster_size": bottleneck.cluster_size.contiguous()}
    accelerator.wait_for_everyone()
    accelerator.free_memory(model, optimizer, loader)
    return tensors


def main():
    output_dir = Path(sys.argv[1])
    accelerator = Accelerator(cpu=True)
    data = load_dataset_for_training("digits")["train"].with_format("torch", columns=["pixel_values"])
    for name, (sync, ema) in CONFIGURATIONS.items():
        tensors = train_one(accelerator, data, sync, ema)
        save_file(tensors, str(output_dir / f"{name}_rank{accelerator.process_index}.safetensors"))
    accelerator.print(f"world_size={accelerator.num_processes}")
    accelerator.end_training()  # destroys the process group while both ranks are here


if __name__ == "__main__":
    main()
