from .configuration_funnel_vae import FunnelVaeConfig
from .modeling_funnel_vae import (
    FunnelVaeDecoderOutput,
    FunnelVaeEncoderOutput,
    FunnelVaeModel,
    FunnelVaeOutput,
    FunnelVaePreTrainedModel,
)

# save_pretrained writes the code files and an `auto_map`, so the saved folder loads with
# AutoModel.from_pretrained(..., trust_remote_code=True) where hf_ae is not installed.
FunnelVaeConfig.register_for_auto_class()
FunnelVaeModel.register_for_auto_class("AutoModel")

__all__ = [
    "FunnelVaeConfig",
    "FunnelVaeModel",
    "FunnelVaePreTrainedModel",
    "FunnelVaeOutput",
    "FunnelVaeEncoderOutput",
    "FunnelVaeDecoderOutput",
]
