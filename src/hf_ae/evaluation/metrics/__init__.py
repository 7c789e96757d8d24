"""hf_ae's metrics as `evaluate` modules shipped in the package, loaded by path so they work offline
(`evaluate.load("name")` fetches from the Hub; `evaluate.load(folder)` reads the script in the folder).

    from hf_ae.evaluation.metrics import load_metric
    load_metric("image_reconstruction").compute(predictions=[...], references=[...])
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE_METRICS = tuple(sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file()))


def load_metric(name: str):
    """One of AVAILABLE_METRICS, loaded from this package's folder -> an `evaluate.EvaluationModule`."""
    if name not in AVAILABLE_METRICS:
        raise ValueError(f"unknown metric {name!r}; hf_ae ships {list(AVAILABLE_METRICS)}")
    # Imported here, not at the top: scripts/ holds a script named evaluate.py, and a script run from that folder
    # (its folder first on sys.path) that merely imports hf_ae.evaluation must not import it in the library's place.
    import evaluate

    if not callable(getattr(evaluate, "load", None)):
        raise ImportError(f"`import evaluate` found {getattr(evaluate, '__file__', evaluate)!r}, not the Hugging Face "
                          "library: a file named evaluate.py shadows it on sys.path")
    return evaluate.load(str(METRICS_DIR / name))


__all__ = ["AVAILABLE_METRICS", "METRICS_DIR", "load_metric"]
