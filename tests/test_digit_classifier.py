"""The fixed digit classifier that judges generated digits."""

import numpy as np
import pytest
import torch

from hf_ae.data.digits import digits_arrays
from hf_ae.evaluation.digit_classifier import digit_classifier, judge_digit_samples


def test_classifier_is_accurate_and_deterministic():
    classifier, accuracy, real_confident = digit_classifier(16)
    assert accuracy > 0.97 and 0.7 < real_confident < 1.0
    _, test_x, _, _, _ = digits_arrays(image_size=16)
    flat = test_x.reshape(len(test_x), -1)
    probabilities = classifier.predict_proba(flat)
    digit_classifier.cache_clear()
    refitted, again, again_confident = digit_classifier(16)
    assert refitted is not classifier  # a second fit, not the cached object
    # the probabilities themselves, bit for bit: a change in the Platt scaling's random split, which the
    # accuracy (from predict, the argmax of the decision values) would not show, changes these
    assert np.array_equal(refitted.predict_proba(flat), probabilities)
    assert (again, again_confident) == (accuracy, real_confident)


def test_real_digits_are_confident_and_cover_all_classes_noise_is_not():
    _, test_x, _, test_y, _ = digits_arrays(image_size=8)
    real = judge_digit_samples(torch.from_numpy(test_x[:, None]))
    assert real["num_samples"] == 360
    # recorded: 307 of the 360 test digits get p >= 0.9, in every class (the test split has 35-37 per class)
    assert real["confident_class_counts"] == [33, 29, 32, 33, 32, 32, 32, 31, 23, 30]
    assert real["classes_covered"] == 10
    assert real["confident_share"] == real["real_test_digits_confident_share"] == pytest.approx(307 / 360)
    # one repeated digit covers one class: test digit 1, a 6 the classifier is confident about (p = 0.985)
    assert test_y[1] == 6
    repeated = judge_digit_samples(np.repeat(test_x[1:2, None], 20, axis=0))
    assert repeated["confident_share"] == 1.0 and repeated["classes_covered"] == 1
    assert repeated["confident_class_counts"] == [0, 0, 0, 0, 0, 0, 20, 0, 0, 0]
    # noise is not a digit: neither uniform noise nor the N(0.7, 0.2) noise that generation starts from
    generator = torch.Generator().manual_seed(0)
    uniform = judge_digit_samples(torch.rand(200, 1, 8, 8, generator=generator))
    assert uniform["confident_share"] == 0 and uniform["classes_covered"] == 0
    start_noise = (0.7 + 0.2 * torch.randn(200, 1, 16, 16, generator=generator)).clamp(0, 1)
    assert judge_digit_samples(start_noise)["confident_share"] == 0


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match=r"expected grey-scale digit samples of shape \(N, 1, S, S\), got \(4, 3, 8, 8\)"):
        judge_digit_samples(torch.rand(4, 3, 8, 8))
