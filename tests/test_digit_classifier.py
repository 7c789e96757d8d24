"""The fixed digit classifier that judges generated digits."""

import numpy as np
import pytest
import torch

from hf_ae.data.digits import digits_arrays
from hf_ae.evaluation.digit_classifier import digit_classifier, judge_digit_samples


def test_classifier_is_accurate_and_deterministic():
    classifier, accuracy, real_confident = digit_classifier(16)
    assert accuracy > 0.97 and 0.7 < real_confident < 1.0
    digit_classifier.cache_clear()
    _, again, _ = digit_classifier(16)
    assert again == accuracy


def test_real_digits_are_confident_and_cover_all_classes_noise_is_not():
    _, test_x, _, test_y, _ = digits_arrays(image_size=8)
    real = judge_digit_samples(torch.from_numpy(test_x[:, None]))
    assert real["confident_share"] == real["real_test_digits_confident_share"] > 0.6
    assert real["classes_covered"] == 10
    assert sum(real["confident_class_counts"]) == round(real["confident_share"] * real["num_samples"])
    # one repeated digit covers one class
    repeated = judge_digit_samples(np.repeat(test_x[:1, None], 20, axis=0))
    assert repeated["classes_covered"] <= 1
    # noise is not a digit: neither uniform noise nor the N(0.7, 0.2) noise that generation starts from
    generator = torch.Generator().manual_seed(0)
    assert judge_digit_samples(torch.rand(200, 1, 8, 8, generator=generator))["confident_share"] < 0.05
    start_noise = (0.7 + 0.2 * torch.randn(200, 1, 16, 16, generator=generator)).clamp(0, 1)
    assert judge_digit_samples(start_noise)["confident_share"] < 0.05


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match=r"expected grey-scale digit samples of shape \(N, 1, S, S\), got \(4, 3, 8, 8\)"):
        judge_digit_samples(torch.rand(4, 3, 8, 8))
