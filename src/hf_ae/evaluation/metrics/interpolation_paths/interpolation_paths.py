"""How good the points along latent interpolation paths are: validity, novelty, non-triviality and smoothness."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
For each interpolation path (start and end encoded, the latents interpolated, every point decoded), the caller
judges every interior point and measures every step; this module turns those into the figures:

* `valid`: share of interior points the validator accepts (`ast.parse` for code; the reference digit classifier
  confident for digits);
* `valid_novel`: valid and different from both ends (decoding to an end point is not a success);
* `valid_novel_nontrivial`: also non-trivial (code: more than a bare name, a bare constant or a comment), when the
  caller judges that;
* smoothness, from the size of each step between consecutive points (e.g. 1 - similarity of two texts, MSE of two
  images): `mean_step`, and `jump_ratio`, the path's largest step over its mean step, averaged over paths (1 for
  evenly spread change; the number of steps when one step carries all of it). Paths that do not change are left
  out of `jump_ratio`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per path, the size of each step between consecutive points (num_points - 1 floats).
    valid, novel: per path, one bool per interior point.
    nontrivial: per path, one bool per interior point, or None where the notion does not apply.
Returns:
    valid, valid_novel, valid_novel_nontrivial (or None), mean_step, jump_ratio, num_paths, interior_points,
    unchanged_paths.
Example:
    >>> metric.compute(predictions=[[0.0, 1.0], [0.5, 0.5]], valid=[[True], [False]], novel=[[True], [False]])
    {'valid': 0.5, 'valid_novel': 0.5, 'valid_novel_nontrivial': None, 'mean_step': 0.5, 'jump_ratio': 1.5, ...}
"""


class InterpolationPaths(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, valid=None, novel=None, nontrivial=None):
        if valid is None or novel is None:
            raise ValueError("interpolation_paths needs valid= and novel=: one bool per interior point of each path")
        if not (len(predictions) == len(valid) == len(novel)) or (nontrivial is not None and len(nontrivial) != len(valid)):
            raise ValueError("predictions, valid, novel (and nontrivial) must have one entry per path")
        if len(predictions) == 0:
            raise ValueError("interpolation_paths needs at least one path")
        interior = 0
        counts = {"valid": 0, "valid_novel": 0, "valid_novel_nontrivial": 0}
        for index, (steps, path_valid, path_novel) in enumerate(zip(predictions, valid, novel)):
            if not (len(path_valid) == len(path_novel) == len(steps) - 1):
                raise ValueError(
                    f"path {index}: {len(steps)} steps need {len(steps) - 1} interior points, got {len(path_valid)} "
                    f"validity and {len(path_novel)} novelty judgements"
                )
            path_nontrivial = nontrivial[index] if nontrivial is not None else [True] * len(path_valid)
            for is_valid, is_novel, is_nontrivial in zip(path_valid, path_novel, path_nontrivial):
                interior += 1
                counts["valid"] += bool(is_valid)
                counts["valid_novel"] += bool(is_valid and is_novel)
                counts["valid_novel_nontrivial"] += bool(is_valid and is_novel and is_nontrivial)
        steps = [np.asarray(path, np.float64) for path in predictions]
        changing = [path for path in steps if path.mean() > 0]
        return {
            "valid": counts["valid"] / interior,
            "valid_novel": counts["valid_novel"] / interior,
            "valid_novel_nontrivial": counts["valid_novel_nontrivial"] / interior if nontrivial is not None else None,
            "mean_step": float(np.mean([path.mean() for path in steps])),
            "jump_ratio": float(np.mean([path.max() / path.mean() for path in changing])) if changing else None,
            "num_paths": len(steps),
            "interior_points": interior,
            "unchanged_paths": len(steps) - len(changing),
        }
