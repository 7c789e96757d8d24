"""Image reconstruction error: mean squared error per pixel value and PSNR, for images with values in [0, 1]."""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Mean squared error over every value of every image (`mse`), the mean of the per-image MSEs (`mse_per_image_mean`;
equal to `mse` when all images have the same size), and the peak signal-to-noise ratio of the whole set,
`psnr = 10 * log10(data_range**2 / mse)` in dB (`data_range` 1 for images in [0, 1]).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: reconstructed images, each flattened to a list of floats.
    references: the original images, flattened the same way (each the same length as its prediction).
    data_range: the images' value range (1.0 for [0, 1]).
Returns:
    mse, mse_per_image_mean, psnr (dB; inf for a perfect reconstruction).
Example:
    >>> metric = evaluate.load("src/hf_ae/evaluation/metrics/image_reconstruction")
    >>> metric.compute(predictions=[[0.0, 0.5]], references=[[0.0, 0.0]])
    {'mse': 0.125, 'mse_per_image_mean': 0.125, 'psnr': 9.030899869919436}
"""


# The measures are hf_ae's one implementation (hf_ae/evaluation/measures.py), copied so that this module loads on its
# own; utils/check_copies.py checks the copies.
# Copied from hf_ae.evaluation.measures.psnr
def psnr(mse: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error: 10 log10(data_range^2 / mse) (data_range 1 for
    images in [0, 1]); inf for a perfect reconstruction."""
    return float(10 * math.log10(data_range**2 / mse)) if mse > 0 else float("inf")


# Copied from hf_ae.evaluation.measures.image_error_measures
def image_error_measures(squared_error_sums, value_counts, data_range: float = 1.0) -> dict:
    """Per image, the sum of squared errors and the number of values (N,) each -> `mse` over every value of every
    image, `mse_per_image_mean` (the mean of the per-image MSEs; equal to `mse` when all images have one size) and
    `psnr` of `mse` in dB."""
    sums = np.asarray(squared_error_sums, dtype=np.float64)
    counts = np.asarray(value_counts, dtype=np.float64)
    if sums.size == 0:
        raise ValueError("no images to measure")
    if sums.shape != counts.shape:
        raise ValueError(f"one value count per image: {sums.shape} sums vs {counts.shape} counts")
    mse = float(sums.sum() / counts.sum())
    return {"mse": mse, "mse_per_image_mean": float(np.mean(sums / counts)), "psnr": psnr(mse, data_range)}


class ImageReconstruction(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, data_range: float = 1.0):
        if len(predictions) == 0:
            raise ValueError("image_reconstruction needs at least one image, got none")
        squared_error_sums, value_counts = [], []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction, reference = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
            if prediction.shape != reference.shape:
                raise ValueError(
                    f"image {index}: the prediction has {prediction.size} values and the reference {reference.size}"
                )
            squared_error_sums.append(((prediction - reference) ** 2).sum())
            value_counts.append(prediction.size)
        return image_error_measures(squared_error_sums, value_counts, data_range)
