from .arguments import DataArguments, ModelArguments, TrainArguments, parse_args
from .trainer import build_model, train

__all__ = ["DataArguments", "ModelArguments", "TrainArguments", "parse_args", "build_model", "train"]
