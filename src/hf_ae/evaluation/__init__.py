from .reconstruction import evaluate_image_reconstruction

__all__ = ["evaluate_image_reconstruction"]
