"""Text reconstruction: token accuracy over all tokens and the exact-sequence rate."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
For each pair of token sequences of equal length (the predicted tokens, e.g. teacher-forced argmax or greedy
decoding cut to the reference's length, and the reference tokens, end-of-sequence token included):
`token_accuracy` = right tokens / all reference tokens, `exact_match` = share of sequences whose every token is right.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted token ids, one list per sequence.
    references: reference token ids, one list per sequence, each as long as its prediction.
Returns:
    token_accuracy, exact_match, num_tokens, num_sequences.
Example:
    >>> metric.compute(predictions=[[1, 2, 3], [4, 5]], references=[[1, 2, 0], [4, 5]])
    {'token_accuracy': 0.8, 'exact_match': 0.5, 'num_tokens': 5, 'num_sequences': 2}
"""


# The measure is hf_ae's one implementation (hf_ae/evaluation/measures.py), copied so that this module loads on its
# own; utils/check_copies.py checks the copy.
# Copied from hf_ae.evaluation.measures.token_measures
def token_measures(right_tokens, total_tokens) -> dict:
    """Per sequence, the right tokens and all tokens (N,) each -> `token_accuracy` (right / all, over every token),
    `exact_match` (the share of sequences whose every token is right), `num_tokens`, `num_sequences`."""
    right = np.asarray(right_tokens, dtype=np.int64)
    total = np.asarray(total_tokens, dtype=np.int64)
    if right.size == 0:
        raise ValueError("no sequences to measure")
    num_tokens = int(total.sum())
    return {"token_accuracy": float(right.sum() / num_tokens) if num_tokens else 0.0,
            "exact_match": float(np.mean(right == total)), "num_tokens": num_tokens, "num_sequences": int(right.size)}


class TextReconstruction(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("text_reconstruction needs at least one sequence, got none")
        right_tokens, total_tokens = [], []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            if len(prediction) != len(reference):
                raise ValueError(
                    f"sequence {index}: the prediction has {len(prediction)} tokens and the reference "
                    f"{len(reference)}; cut or pad predictions to the reference's length first"
                )
            right_tokens.append(sum(p == r for p, r in zip(prediction, reference)))
            total_tokens.append(len(reference))
        return token_measures(right_tokens, total_tokens)
