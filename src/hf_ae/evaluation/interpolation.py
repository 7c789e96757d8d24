"""How valid the points along a latent interpolation are, for text models.

For each pair of held-out texts, encode both, interpolate each latent token (slerp or lerp) at evenly spaced
ratios, decode every point greedily, and score the interior points (the ends are the reconstructions):

* `valid`: the validator accepts the text (`python`: `ast.parse` accepts it);
* `valid_novel`: valid, and different from both input texts and from both end decodings: decoding to an end
  point is not a success;
* `valid_novel_nontrivial`: also more than a bare name, a bare constant or a comment. Garbage such as `terrrrr`
  parses as a bare name, so `valid` alone can be high for an untrained model.

Each share comes with its standard error over pairs (`valid_stderr`, ...): with 200 pairs it is a few points, which
is the scale on which two models' figures can be told apart.
"""

import ast
import random

import torch

from ..models.pipeline_autoencoder import python_is_valid


def python_is_nontrivial(text: str) -> bool:
    """Parses, and is more than a bare name, a bare constant (number, string, ...) or a comment/blank line."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    if not tree.body:  # a comment or whitespace only
        return False
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        return not isinstance(tree.body[0].value, (ast.Name, ast.Constant))
    return True


VALIDATORS = {"python": (python_is_valid, python_is_nontrivial)}


def sample_pairs(num_texts: int, num_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """`num_pairs` distinct index pairs (i != j) drawn with a fixed seed."""
    if num_texts < 2:
        raise ValueError(f"need at least 2 texts to form pairs, got {num_texts}")
    rng = random.Random(seed)
    pairs = set()
    while len(pairs) < min(num_pairs, num_texts * (num_texts - 1) // 2):
        i, j = rng.sample(range(num_texts), 2)
        pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


@torch.no_grad()
def decode_text_paths(model, tokenizer, texts: list[str], pairs: list[tuple[int, int]], num_points: int = 11,
                      method: str = "slerp", batch_size: int = 64) -> list[list[str]]:
    """For each pair (i, j): encode texts i and j, interpolate each latent token at `num_points` evenly spaced
    ratios from 0 to 1, decode every point greedily -> one list of `num_points` texts per pair (batched)."""
    if num_points < 3:
        raise ValueError(f"num_points must be >= 3 (two ends and at least one interior point), got {num_points}")
    model.eval()
    ratios = torch.linspace(0.0, 1.0, num_points, device=model.device)
    paths = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        ends = [texts[i] for pair in chunk for i in pair]  # 2 per pair
        batch = tokenizer(ends, padding=True, return_tensors="pt").to(model.device)
        latents = model.encode(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).latents
        points = torch.cat([
            model.interpolate_latents(latents[2 * k], latents[2 * k + 1], ratios, method) for k in range(len(chunk))
        ])  # (pairs * points, N, d)
        decoded = tokenizer.batch_decode(model.generate(points).tolist(), skip_special_tokens=True)
        paths += [decoded[k * num_points : (k + 1) * num_points] for k in range(len(chunk))]
    return paths


def judge_text_path(path: list[str], start: str, end: str, validator: str = "python") -> tuple[list, list, list]:
    """The interior points of a decoded path -> (valid, novel, nontrivial), one bool per point. Novel: different
    from both input texts and both end decodings."""
    is_valid, is_nontrivial = VALIDATORS[validator]
    forbidden = {start, end, path[0], path[-1]}
    interior = path[1:-1]
    return [is_valid(t) for t in interior], [t not in forbidden for t in interior], [is_nontrivial(t) for t in interior]


def text_interpolation_metrics(
    model,
    tokenizer,
    texts: list[str],
    pairs: list[tuple[int, int]],
    num_points: int = 11,
    method: str = "slerp",
    validator: str = "python",
    batch_size: int = 64,
) -> dict:
    """Scores of the `num_points - 2` interior points of each pair's path (see the module docstring), plus a
    few example paths. `texts` are the inputs; `pairs` index into them."""
    if validator not in VALIDATORS:
        raise ValueError(f"unknown validator {validator!r}; choose one of {sorted(VALIDATORS)}")
    paths = decode_text_paths(model, tokenizer, texts, pairs, num_points, method, batch_size)
    names = ("valid", "valid_novel", "valid_novel_nontrivial")
    hits = []  # per pair: how many interior points are valid / valid and novel / also non-trivial
    examples = []
    ratios = torch.linspace(0.0, 1.0, num_points).tolist()
    for (i, j), path in zip(pairs, paths):
        valid, novel, nontrivial = torch.tensor(judge_text_path(path, texts[i], texts[j], validator))  # (P,) bools each
        hits.append(torch.stack([valid, valid & novel, valid & novel & nontrivial]).sum(1))
        if len(examples) < 5:
            is_valid = VALIDATORS[validator][0]
            examples.append({"start": texts[i], "end": texts[j],
                             "path": [{"ratio": round(r, 2), "text": t, "valid": is_valid(t)}
                                      for r, t in zip(ratios, path)]})
    # (pairs, 3) shares. Every path has num_points - 2 interior points, so the mean of the pairs' shares is the share
    # of all points. Those points are not independent draws, the pairs are: the standard error is that of the mean
    # over pairs (None for one pair).
    pair_shares = torch.stack(hits).double() / (num_points - 2)
    stderr = pair_shares.std(0) / len(pairs) ** 0.5 if len(pairs) > 1 else [None] * len(names)
    return {
        **{name: share.item() for name, share in zip(names, pair_shares.mean(0))},
        **{f"{name}_stderr": None if se is None else float(se) for name, se in zip(names, stderr)},
        "pairs": len(pairs),
        "interior_points": len(pairs) * (num_points - 2),
        "method": method,
        "examples": examples,
    }


__all__ = ["decode_text_paths", "judge_text_path", "python_is_nontrivial", "sample_pairs", "text_interpolation_metrics"]
