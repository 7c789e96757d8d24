"""A fixed digit classifier to judge generated digits: how many samples it is confident about, and which classes.

Trained deterministically on the `digits` training split at the samples' resolution (scikit-learn's
`LogisticRegression` on standardised pixels: its probabilities are calibrated well enough for a confidence
threshold, and it fits in about a second). Its test accuracy is returned with it so that every report can print it.
"""

from functools import lru_cache

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.digits import digits_arrays

CONFIDENCE_THRESHOLD = 0.9


@lru_cache(maxsize=4)
def digit_classifier(image_size: int = 8):
    """(classifier, test accuracy) for `digits` at `image_size` (8, 16 or 32); cached per size in this process."""
    train_x, test_x, train_y, test_y, _ = digits_arrays(image_size=image_size)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    classifier.fit(train_x.reshape(len(train_x), -1), train_y)
    return classifier, float(classifier.score(test_x.reshape(len(test_x), -1), test_y))


def judge_digit_samples(samples, threshold: float = CONFIDENCE_THRESHOLD) -> dict:
    """samples (N, 1, S, S) in [0, 1] -> the share the classifier assigns a class with probability >= threshold, the
    classes those confident samples cover, and the classifier's own test accuracy."""
    array = samples.detach().float().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if array.ndim != 4 or array.shape[1] != 1 or array.shape[2] != array.shape[3]:
        raise ValueError(f"expected grey-scale digit samples of shape (N, 1, S, S), got {array.shape}")
    classifier, accuracy = digit_classifier(int(array.shape[-1]))
    probabilities = classifier.predict_proba(array.reshape(len(array), -1))  # (N, 10)
    confident = probabilities.max(1) >= threshold
    predicted = probabilities.argmax(1)
    counts = np.bincount(predicted[confident], minlength=10)
    return {
        "num_samples": int(len(array)),
        "confident_share": float(confident.mean()),
        "classes_covered": int((counts > 0).sum()),
        "confident_class_counts": counts.tolist(),
        "threshold": threshold,
        "classifier_test_accuracy": accuracy,
    }
