"""Quality of generated digits, judged by hf_ae's reference digit classifier."""

import datasets
import evaluate
import numpy as np
from scipy import linalg

from hf_ae.evaluation.digit_classifier import CONFIDENCE_THRESHOLD, digit_classifier, judge_digit_samples

_DESCRIPTION = """
The reference digit classifier (`hf_ae.evaluation.digit_classifier`: an RBF SVC trained deterministically on the
`digits` training split at the images' size) judges generated digits:

* `confident_share`: share of samples it assigns a class with probability >= `threshold` (0.9);
* `classes_covered` and `class_entropy_bits`: the classes of those confident samples, and the entropy of their
  histogram (log2(10) = 3.32 bits when the ten digits are equally frequent, 0 when all are one digit);
* `frechet_distance`: the Fréchet distance between Gaussians fitted to the classifier's features (its 10 one-vs-rest
  decision values) of the samples and of the references (real digits, e.g. the test split) — the FID recipe with
  this classifier in place of Inception;
* `classifier_test_accuracy` and `real_test_digits_confident_share`: the classifier's own figures, to read the
  others against.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated grey-scale digits, each a flattened S*S list of floats in [0, 1] (S = 8, 16 or 32).
    real_images: real digits of the same size, flattened the same way (for the Fréchet distance), any number.
    threshold: the probability that counts as confident.
Returns:
    confident_share, classes_covered, class_entropy_bits, confident_class_counts, frechet_distance,
    classifier_test_accuracy, real_test_digits_confident_share, num_samples.
"""


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to (n, d) features."""
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real  # numerical noise can leave tiny imaginary parts
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class DigitSamples(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                # the real digits are an argument of compute, not "references": evaluate pairs each prediction
                # with one reference, and a sample set and a test set need not be the same size
                {"predictions": datasets.Sequence(datasets.Value("float32"))}
            ),
        )

    def _compute(self, predictions, real_images=None, threshold: float = CONFIDENCE_THRESHOLD):
        if real_images is None:
            raise ValueError("digit_samples needs real_images=: real digits (e.g. the test split) for the Fréchet distance")
        samples, real = np.asarray(predictions, np.float64), np.asarray(real_images, np.float64)
        if samples.ndim != 2 or real.ndim != 2 or samples.shape[1] != real.shape[1]:
            raise ValueError(f"samples and references must be flattened images of one size, got {samples.shape} and {real.shape}")
        size = int(round(samples.shape[1] ** 0.5))
        if size * size != samples.shape[1] or size not in (8, 16, 32):
            raise ValueError(f"expected flattened grey-scale 8x8, 16x16 or 32x32 digits, got {samples.shape[1]} values each")
        if len(samples) < 2 or len(real) < 2:
            raise ValueError("the Fréchet distance needs at least 2 samples and 2 references")
        # confident share, classes covered and their counts, the classifier's own figures: the shared judge
        verdict = judge_digit_samples(samples.reshape(len(samples), 1, size, size), threshold)
        counts = np.asarray(verdict["confident_class_counts"])
        shares = counts[counts > 0] / counts.sum() if counts.sum() else np.zeros(0)
        classifier, _, _ = digit_classifier(size)
        return {
            **verdict,
            "class_entropy_bits": float(max(0.0, -(shares * np.log2(shares)).sum())),
            "frechet_distance": frechet_distance(classifier.decision_function(samples), classifier.decision_function(real)),
        }
