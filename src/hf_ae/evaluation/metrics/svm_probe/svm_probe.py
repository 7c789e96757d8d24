"""The SVM latent probe as a metric: how much class information features (latents, or raw inputs) keep."""

import datasets
import evaluate
import numpy as np

from hf_ae.evaluation.probe import cross_validated_svm, svm_accuracy

_DESCRIPTION = """
The probe of `scripts/probe_svm.py` (the same function, `hf_ae.evaluation.probe.svm_accuracy`): a standardised
RBF `SVC` whose C and gamma are chosen by 5-fold cross-validation on the training features, scored on the test
features (`accuracy`); with `folds`, also a k-fold cross-validation over training and test features together,
with that grid search inside every fold (`cv_mean`, `cv_std`, `cv_scores`); `chance`, the share of the most
frequent test label.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: test features, one list of floats per example (e.g. flattened latents).
    references: their class labels (ints).
    train_features, train_labels: the training split's features and labels (required).
    folds: k of the pooled cross-validation (None: skip it).
Returns:
    accuracy, chance, and with folds cv_mean, cv_std, cv_scores, cv_folds.
"""


class SvmProbe(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, train_features=None, train_labels=None, folds=None):
        if train_features is None or train_labels is None:
            raise ValueError("svm_probe needs train_features= and train_labels= to fit the SVM on")
        test_x, test_y = np.asarray(predictions, np.float64), np.asarray(references)
        train_x, train_y = np.asarray(train_features, np.float64), np.asarray(train_labels)
        if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
            raise ValueError(f"train and test features must be (n, d) of one width, got {train_x.shape} and {test_x.shape}")
        if len(train_x) != len(train_y):
            raise ValueError(f"{len(train_x)} training feature rows but {len(train_y)} training labels")
        results = {"accuracy": svm_accuracy(train_x, train_y, test_x, test_y),
                   "chance": float(np.bincount(test_y).max() / len(test_y))}
        if folds:
            cv = cross_validated_svm(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]), folds)
            results.update({"cv_mean": cv["mean"], "cv_std": cv["std"], "cv_scores": cv["scores"], "cv_folds": cv["folds"]})
        return results
