from .configuration_patch_prior import PatchPriorConfig
from .modeling_patch_prior import (
    PatchPriorGenerationOutput,
    PatchPriorModel,
    PatchPriorOutput,
    PatchPriorPreTrainedModel,
)

# save_pretrained writes the code files and an `auto_map`, so the saved folder loads with
# AutoModel.from_pretrained(..., trust_remote_code=True) where hf_ae is not installed.
PatchPriorConfig.register_for_auto_class()
PatchPriorModel.register_for_auto_class("AutoModel")

__all__ = [
    "PatchPriorConfig",
    "PatchPriorModel",
    "PatchPriorPreTrainedModel",
    "PatchPriorOutput",
    "PatchPriorGenerationOutput",
]
