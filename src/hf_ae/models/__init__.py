"""One self-contained folder per model: each folder is what the Hub receives, so it imports only its siblings."""

from .funnel_vae import FunnelVaeConfig, FunnelVaeModel
from .patch_prior import PatchPriorConfig, PatchPriorModel
from .patch_vae import PatchVaeConfig, PatchVaeModel
from .unet_ae import UNetAeConfig, UNetAeModel

# `--model` names of scripts/train.py -> (config class, model class)
MODEL_CLASSES = {
    "patch_vae": (PatchVaeConfig, PatchVaeModel),
    "funnel_vae": (FunnelVaeConfig, FunnelVaeModel),
    "unet_ae": (UNetAeConfig, UNetAeModel),
    # the autoregressive prior over a discrete PatchVae's codes (trained with --autoencoder)
    "patch_prior": (PatchPriorConfig, PatchPriorModel),
}

__all__ = [
    "MODEL_CLASSES",
    "FunnelVaeConfig",
    "FunnelVaeModel",
    "PatchPriorConfig",
    "PatchPriorModel",
    "PatchVaeConfig",
    "PatchVaeModel",
    "UNetAeConfig",
    "UNetAeModel",
]
