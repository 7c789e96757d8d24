"""hf_ae: Hugging Face-compatible autoencoders you can train, measure and share on the Hub."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .models import (
    MODEL_CLASSES,
    FunnelVaeConfig,
    FunnelVaeModel,
    PatchPriorConfig,
    PatchPriorModel,
    PatchVaeConfig,
    PatchVaeModel,
    UNetAeConfig,
    UNetAeModel,
)
from .models.image_processing_autoencoder import AutoencoderImageProcessor
from .models.modeling_autoencoder import AutoencoderMixin, AutoencoderSampleOutput, DiagonalGaussianPosterior
from .models.pipeline_autoencoder import AUTOENCODER_PIPELINE_CLASSES

__version__ = "0.1.0"

# With hf_ae installed, the Auto classes know our models without trust_remote_code. The pipeline tasks are
# registered too, but a saved model lists them in config.custom_pipelines, and transformers then always
# loads them from the model's folder as remote code (trust_remote_code=True), hf_ae installed or not.
for _config_class, _model_class in MODEL_CLASSES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    if _config_class.model_type != "patch_prior":  # the prior reads codes; its autoencoder reads images
        AutoImageProcessor.register(_config_class, slow_image_processor_class=AutoencoderImageProcessor, exist_ok=True)
# A saved processor writes its code file and an auto_map, so AutoImageProcessor loads it without hf_ae installed.
AutoencoderImageProcessor.register_for_auto_class("AutoImageProcessor")
for _task, _pipeline_class in AUTOENCODER_PIPELINE_CLASSES.items():
    # pt_model=AutoModel: a model class of ours registered here broke reloading a saved pipeline
    PIPELINE_REGISTRY.register_pipeline(_task, pipeline_class=_pipeline_class, pt_model=AutoModel, type="multimodal")

__all__ = [
    "AutoencoderImageProcessor",
    "AutoencoderMixin",
    "AutoencoderSampleOutput",
    "DiagonalGaussianPosterior",
    "FunnelVaeConfig",
    "FunnelVaeModel",
    "PatchPriorConfig",
    "PatchPriorModel",
    "PatchVaeConfig",
    "PatchVaeModel",
    "UNetAeConfig",
    "UNetAeModel",
    "MODEL_CLASSES",
    "__version__",
]
