from .configuration_patch_vae import PatchVaeConfig
from .modeling_patch_vae import (
    PatchVaeDecoderOutput,
    PatchVaeEncoderOutput,
    PatchVaeModel,
    PatchVaeOutput,
    PatchVaePreTrainedModel,
)

# save_pretrained writes the code files and an `auto_map`, so the saved folder loads with
# AutoModel.from_pretrained(..., trust_remote_code=True) where hf_ae is not installed.
PatchVaeConfig.register_for_auto_class()
PatchVaeModel.register_for_auto_class("AutoModel")

__all__ = [
    "PatchVaeConfig",
    "PatchVaeModel",
    "PatchVaePreTrainedModel",
    "PatchVaeOutput",
    "PatchVaeEncoderOutput",
    "PatchVaeDecoderOutput",
]
