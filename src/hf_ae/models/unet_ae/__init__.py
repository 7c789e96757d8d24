from .configuration_unet_ae import UNetAeConfig
from .modeling_unet_ae import (
    UNetAeDecoderOutput,
    UNetAeEncoderOutput,
    UNetAeGenerationOutput,
    UNetAeModel,
    UNetAeOutput,
    UNetAePreTrainedModel,
)

# save_pretrained writes the code files and an `auto_map`, so the saved folder loads with
# AutoModel.from_pretrained(..., trust_remote_code=True) where hf_ae is not installed.
UNetAeConfig.register_for_auto_class()
UNetAeModel.register_for_auto_class("AutoModel")

__all__ = [
    "UNetAeConfig",
    "UNetAeModel",
    "UNetAePreTrainedModel",
    "UNetAeOutput",
    "UNetAeEncoderOutput",
    "UNetAeDecoderOutput",
    "UNetAeGenerationOutput",
]
