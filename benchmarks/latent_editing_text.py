"""Latent editing, breeding and token swaps on text (issue 23's measure, the text part): FunnelVae on python-lines,
judged by `ast`, and on digits-text, judged by the digit classifier.

    python -m benchmarks.latent_editing_text [--python_lines_model DIR] [--per_class 20] [--quick]

Models: a FunnelVae trained on python-lines with the settings of the best CPU run of
benchmarks/funnel_vae_python_lines.py (4 decoder layers, unaligned latents, 25% input-token deletion on half the
batches; 8 latent tokens of 32) for `--python_lines_steps` (10000: about 50 min on 2 CPU cores), or the folder
`--python_lines_model` (a model trained so before; the results record which); and one trained here on digits-text
with that benchmark's digits-text settings (aligned latents, `--digits_text_steps`).

* **Labels.** python-lines' own label is the module a line comes from (no signal in the latents: the SVM probe
  reads 15.4% against 15.8% for a bag of bytes). Here each line is labelled by its top statement's kind
  (`statement_kind`: `ast`'s class of the first statement, with an expression statement split into `Call` and
  `Expr`, and `ImportFrom` counted as `Import`); kinds with fewer than `MIN_KIND_LINES` training lines are left out
  (their count is reported). The SVM probe (RBF, as in the training runs) is run on both labels.
* **Edits.** For every ordered pair of kinds (a, b) (digits: classes), `--per_class` test inputs of a are moved
  towards b and decoded greedily, at strengths 0, 0.5, 1, 1.5, 2, along `between` (b's mean latents minus a's),
  `class_means`, `probe_normal` and a random direction of `between`'s norm (the control). Reported: the share that
  is well formed (parses; digits: 8 rows of 8 characters of the alphabet) and has the target kind (digits: the
  classifier's argmax is b), the share well formed, the share still of kind a, and the share whose text changed.
* **Breeding.** 200 pairs of test inputs with different labels; 4 children each (genes per latent token), without
  and with a mutation, and the slerp midpoint of each pair. python-lines: valid = parses and is more than a bare
  name, constant or comment; novel = differs from both parents and both parents' reconstructions. digits-text:
  valid = well formed and the classifier's p >= 0.9; novel = pixel RMSE >= 0.1 to both parents' reconstructions.
* **Token swaps.** For the same pairs, latent token k of parent b replaces parent a's: how often the text changes,
  the share of the changed characters of a's reconstruction that lie in token k's span of the input (characters
  4k..4k+3: the encoder pools by 4), and how often the label (kind, digit) changes to b's.
"""

import argparse
import ast
import difflib
import json
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from benchmarks.funnel_vae_python_lines import train_model
from benchmarks.latent_editing import pairs_of_different_labels
from hf_ae import FunnelVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.data.digits import TEXT_LEVELS, TEXT_OFFSET, decode_digit_text
from hf_ae.editing import compute_directions
from hf_ae.evaluation.digit_classifier import CONFIDENCE_THRESHOLD, digit_classifier
from hf_ae.evaluation.interpolation import python_is_nontrivial
from hf_ae.evaluation.probe import run_probe

STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0)
MIN_KIND_LINES = 300
NOVELTY_RMSE = 0.1
RESULTS = Path("benchmarks/results")
# The best CPU run of benchmarks/funnel_vae_python_lines.py (benchmarks/README.md, "FunnelVae on python-lines").
PYTHON_LINES_OVERRIDES = "decoder_num_hidden_layers=4,decoder_aligned_latents=False"
PYTHON_LINES_TRAIN_ARGS = ["--input_token_deletion", "0.25", "--input_token_deletion_share", "0.5", "--seed", "42"]


def statement_kind(line: str) -> str | None:
    """The kind of a line's first statement (`ast` class name; `Call` for a call statement, `Expr` for another
    expression statement, `Import` for both import forms), or None where the line does not parse or is empty."""
    try:
        body = ast.parse(line).body
    except (SyntaxError, ValueError):
        return None
    if not body:
        return None
    statement = body[0]
    if isinstance(statement, ast.Expr):
        return "Call" if isinstance(statement.value, ast.Call) else "Expr"
    if isinstance(statement, ast.ImportFrom):
        return "Import"
    return type(statement).__name__


def python_lines_by_kind(splits: datasets.DatasetDict) -> tuple[datasets.DatasetDict, list[str], dict]:
    """python-lines relabelled by statement kind (a ClassLabel of the kinds with >= MIN_KIND_LINES training lines;
    lines of rarer kinds dropped) -> (splits, kinds, counts of every kind in the training split)."""
    train_kinds = [statement_kind(line) for line in splits["train"]["text"]]
    counts = {kind: train_kinds.count(kind) for kind in sorted(set(train_kinds), key=str)}
    kinds = sorted(kind for kind, count in counts.items() if kind is not None and count >= MIN_KIND_LINES)
    label = datasets.ClassLabel(names=kinds)
    relabelled = {}
    for split in ("train", "test"):
        texts = list(splits[split]["text"])
        line_kinds = train_kinds if split == "train" else [statement_kind(line) for line in texts]
        keep = [i for i, kind in enumerate(line_kinds) if kind in kinds]
        relabelled[split] = datasets.Dataset.from_dict(
            {"text": [texts[i] for i in keep], "label": [kinds.index(line_kinds[i]) for i in keep]},
            features=datasets.Features({"text": datasets.Value("string"), "label": label}))
    return datasets.DatasetDict(relabelled), kinds, counts


# ------------------------------------------------------------------------------------------------------ judges
def python_judge(texts: list[str], names: list[str]) -> dict:
    """Per text: well formed (parses), its label index (kind among `names`; -1 for none), non-trivial."""
    kinds = [statement_kind(text) for text in texts]
    return {"well_formed": np.array([kind is not None for kind in kinds]),
            "label": np.array([names.index(kind) if kind in names else -1 for kind in kinds]),
            "nontrivial": np.array([python_is_nontrivial(text) for text in texts])}


def digit_grid(text: str) -> np.ndarray | None:
    """A digits-text text -> its (8, 8) image, or None unless it is 8 rows of 8 characters of the alphabet."""
    rows = text.split("\n")
    if len(rows) != 8 or any(len(row) != 8 for row in rows) or \
            any(not TEXT_OFFSET <= ord(char) <= TEXT_OFFSET + TEXT_LEVELS for row in rows for char in row):
        return None
    return decode_digit_text(text)


def digits_judge(texts: list[str], names: list[str]) -> dict:
    """Per text: well formed (an 8x8 grid), the classifier's digit (-1 for no grid), p >= 0.9, and the image."""
    grids = [digit_grid(text) for text in texts]
    images = np.stack([grid if grid is not None else np.zeros((8, 8), np.float32) for grid in grids])
    well_formed = np.array([grid is not None for grid in grids])
    probabilities = digit_classifier(8)[0].predict_proba(images.reshape(len(images), -1))
    label = np.where(well_formed, probabilities.argmax(1), -1)
    return {"well_formed": well_formed, "label": label,
            "confident": well_formed & (probabilities.max(1) >= CONFIDENCE_THRESHOLD), "images": images}


# ------------------------------------------------------------------------------------------------------ decoding
@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, return_tensors="pt")
        chunks.append(model.encode(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).latents)
    return torch.cat(chunks)  # (N, T, d)


@torch.no_grad()
def decode_texts(model, tokenizer, latents: torch.Tensor, batch_size: int = 256) -> list[str]:
    texts = []
    for start in range(0, len(latents), batch_size):
        ids = model.generate(latents[start:start + batch_size])
        texts += tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)
    return texts


def edit_table(model, tokenizer, directions, names, test_texts, test_labels, per_class, judge, generator) -> list:
    """One row per (direction kind, strength): the shares reaching the target label, well formed, still the source,
    changed (see the module docstring)."""
    chosen = [[i for i in np.flatnonzero(test_labels == a)[:per_class]] for a in range(len(names))]
    sources, targets, start_index = [], [], []
    for a in range(len(names)):
        for b in range(len(names)):
            if a != b:
                sources += [a] * len(chosen[a])
                targets += [b] * len(chosen[a])
                start_index += chosen[a]
    sources, targets = np.array(sources), np.array(targets)
    starts = encode_texts(model, tokenizer, [test_texts[i] for i in start_index])  # (M, T, d)
    latent_norm = float(starts.flatten(1).norm(dim=1).mean())
    kinds = {
        "between": torch.stack([directions.between(names[a], names[b]) for a, b in zip(sources, targets)]),
        "class_means": torch.stack([directions.direction(names[b]) for b in targets]),
        "probe_normal": torch.stack([directions.direction(names[b], "probe_normal") for b in targets]),
    }
    noise = torch.randn(kinds["between"].shape, generator=generator)
    scale = kinds["between"].flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    kinds["random (control)"] = noise * scale.view(-1, 1, 1)
    reconstructions = decode_texts(model, tokenizer, starts)
    rows = []
    for kind, moves in kinds.items():
        for strength in STRENGTHS:
            if strength == 0.0 and kind != "between":
                continue  # strength 0 is the same reconstruction for every direction
            texts = reconstructions if strength == 0.0 else decode_texts(model, tokenizer, starts + strength * moves)
            verdict = judge(texts, names)
            rows.append({
                "direction": kind, "strength": strength, "edits": len(texts),
                "to_target": float((verdict["well_formed"] & (verdict["label"] == targets)).mean()),
                "well_formed": float(verdict["well_formed"].mean()),
                "still_source": float((verdict["label"] == sources).mean()),
                "changed": float(np.mean([t != r for t, r in zip(texts, reconstructions)])),
                "distance_over_latent_norm": float(strength * moves.flatten(1).norm(dim=1).mean() / latent_norm),
            })
    examples = []
    for a in range(len(names)):  # one strip per source label: towards the next label, along `between`
        b = (a + 1) % len(names)
        if not chosen[a]:
            continue
        start = starts[list(start_index).index(chosen[a][0])]
        strip = decode_texts(model, tokenizer, torch.stack([start + s * directions.between(names[a], names[b])
                                                            for s in STRENGTHS]))
        examples.append({"source": names[a], "target": names[b], "input": test_texts[chosen[a][0]],
                         "strip": dict(zip([f"{s:g}" for s in STRENGTHS], strip))})
    return rows, examples


def changed_characters(before: str, after: str) -> list[int]:
    """Indices of `before`'s characters that `after` replaces or deletes, and of those an insertion lands before."""
    changed = []
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            changed += range(i1, i2)
        elif tag == "insert":
            changed.append(min(i1, max(len(before) - 1, 0)))
    return changed


@torch.no_grad()
def breeding_and_swaps(model, tokenizer, names, test_texts, test_labels, judge, mutation, generator, num_pairs=200,
                       image_judge=False):
    pairs = pairs_of_different_labels(test_labels, num_pairs)
    flat = encode_texts(model, tokenizer, [test_texts[i] for pair in pairs for i in pair])  # (2N, T, d)
    parents = flat.view(num_pairs, 2, *flat.shape[1:])  # (N, 2, T, d)
    recon = decode_texts(model, tokenizer, parents.flatten(0, 1))
    recon_pairs = [(recon[2 * k], recon[2 * k + 1]) for k in range(num_pairs)]
    recon_verdict = judge(recon, names)

    def judge_children(texts, per_pair, generator_name):
        verdict = judge(texts, names)
        owners = [k for k in range(num_pairs) for _ in range(per_pair)]
        if image_judge:
            images = torch.from_numpy(verdict["images"]).flatten(1)
            parent_images = torch.from_numpy(recon_verdict["images"]).view(num_pairs, 2, -1)[owners]  # (M, 2, 64)
            rmse = (images[:, None] - parent_images).pow(2).mean(-1).sqrt()  # (M, 2)
            novel = verdict["well_formed"] & (rmse >= NOVELTY_RMSE).all(1).numpy()
            valid = verdict["confident"]
        else:
            novel = np.array([text not in {test_texts[pairs[k][0]], test_texts[pairs[k][1]], *recon_pairs[k]}
                              for text, k in zip(texts, owners)])
            valid = verdict["well_formed"] & verdict["nontrivial"]
        return {"generator": generator_name, "children": len(texts), "valid": float(valid.mean()),
                "novel": float(novel.mean()), "valid_and_novel": float((valid & novel).mean())}

    rows = []
    for sigma in (0.0, mutation):
        children = torch.cat([model.breed_latents(p, 4, mutation=sigma, generator=generator)[0] for p in parents])
        rows.append(judge_children(decode_texts(model, tokenizer, children), 4,
                                   f"breeding, 4 children per pair, mutation {sigma:g}"))
    midpoints = torch.stack([model.interpolate_latents(p[0], p[1], torch.tensor([0.5]), "slerp")[0] for p in parents])
    rows.append(judge_children(decode_texts(model, tokenizer, midpoints), 1, "slerp midpoint of each pair"))
    example_children = decode_texts(model, tokenizer, model.breed_latents(parents[0], 6, mutation=mutation,
                                                                          generator=generator)[0])
    breeding_example = {"parents": [test_texts[i] for i in pairs[0]], "children": example_children}

    num_tokens = parents.shape[2]
    pooling = model.config.pooling_factor
    swaps = []
    labels_a = np.array([test_labels[i] for i, _ in pairs])
    labels_b = np.array([test_labels[j] for _, j in pairs])
    recon_a = [a for a, _ in recon_pairs]
    for token in range(num_tokens):
        genes = torch.zeros(1, num_tokens, dtype=torch.long)
        genes[0, token] = 1
        texts = decode_texts(model, tokenizer, torch.cat([model.cross_latents(p, genes) for p in parents]))
        verdict = judge(texts, names)
        inside, changed = [], []
        for before, after in zip(recon_a, texts):
            positions = changed_characters(before, after)
            changed.append(before != after)
            if positions:
                inside.append(np.mean([token * pooling <= p < (token + 1) * pooling for p in positions]))
        swaps.append({"token": token, "characters": f"{token * pooling}-{(token + 1) * pooling - 1}",
                      "text_changed": float(np.mean(changed)),
                      "change_inside_token_span": float(np.mean(inside)) if inside else 0.0,
                      "label_changed_to_b": float((verdict["label"] == labels_b).mean()),
                      "label_kept": float((verdict["label"] == labels_a).mean())})
    return rows, swaps, breeding_example


def measure(name, model, tokenizer, splits, names, judge, per_class, mutation, direction_samples,
            image_judge=False) -> dict:
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    with tqdm(desc="linear probe fits (directions)", unit="fit") as progress:
        directions = compute_directions(model, splits["train"], tokenizer, dataset_name=name, progress=progress,
                                        max_rows=direction_samples)
    test_texts = list(splits["test"]["text"])
    test_labels = np.asarray(splits["test"]["label"])
    edits, strips = edit_table(model, tokenizer, directions, names, test_texts, test_labels, per_class, judge,
                               generator)
    breeding, swaps, breeding_example = breeding_and_swaps(model, tokenizer, names, test_texts, test_labels, judge,
                                                           mutation, generator, image_judge=image_judge)
    return {"labels": names, "direction_train_samples": directions.metadata["train_samples"], "edits": edits, "strips": strips, "breeding": breeding,
            "breeding_example": breeding_example, "token_swaps": swaps,
            "seconds": time.perf_counter() - started}


def probe_figures(model, tokenizer, splits, train_samples, test_samples) -> dict:
    rng = np.random.default_rng(0)
    sample = datasets.DatasetDict({
        split: splits[split].select(sorted(rng.choice(len(splits[split]), min(size, len(splits[split])),
                                                      replace=False).tolist()))
        for split, size in (("train", train_samples), ("test", test_samples))})
    result = run_probe(model, sample, tokenizer)
    return {key: result[key] for key in ("latents_concatenated", "latents_mean_pooled", "raw_inputs", "chance")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python_lines_model", default=None,
                        help="A FunnelVae folder trained on python-lines (default: train one here)")
    parser.add_argument("--python_lines_steps", type=int, default=10000)
    parser.add_argument("--digits_text_steps", type=int, default=1500)
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--mutation", type=float, default=0.3, help="the mutation σ of the second breeding row")
    parser.add_argument("--direction_samples", type=int, default=20000,
                        help="training inputs the directions are computed from (a random sample past this)")
    parser.add_argument("--probe_train_samples", type=int, default=5000)
    parser.add_argument("--probe_test_samples", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 training steps per model, small probes (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.python_lines_steps = args.digits_text_steps = 200
        args.probe_train_samples, args.probe_test_samples, args.per_class, args.direction_samples = 300, 100, 3, 2000
    torch.manual_seed(0)
    started = time.perf_counter()
    report = {"strengths": STRENGTHS, "per_class": args.per_class, "mutation": args.mutation,
              "min_kind_lines": MIN_KIND_LINES, "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        # python-lines
        if args.python_lines_model:
            folder = Path(args.python_lines_model)
            training = {"model_folder": str(folder), "trained_here": False}
        else:
            folder = Path(scratch) / "python-lines"
            train_model("python-lines", folder, args.python_lines_steps, PYTHON_LINES_OVERRIDES,
                        train_args=PYTHON_LINES_TRAIN_ARGS + ["--probe", "False"])
            training = {"trained_here": True}
        model = FunnelVaeModel.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        saved = json.loads((folder / "all_results.json").read_text())  # what the training run measured
        training.update({"steps": saved["global_step"], "minutes": saved["train_runtime_seconds"] / 60,
                         "token_accuracy": saved["eval_token_accuracy"],
                         "exact_lines_teacher_forced": saved.get("eval_exact_match")})
        lines = load_dataset_for_training("python-lines")
        by_kind, kinds, counts = python_lines_by_kind(lines)
        print(f"statement kinds kept: {kinds}; training lines per kind: {counts}")
        probes = {"statement_kind": probe_figures(model, tokenizer, by_kind, args.probe_train_samples,
                                                  args.probe_test_samples),
                  "module": probe_figures(model, tokenizer, lines, args.probe_train_samples,
                                          args.probe_test_samples)}
        print(f"probes ({time.perf_counter() - started:.0f} s): {probes}")
        figures = measure("python-lines statement kinds", model, tokenizer, by_kind, kinds, python_judge,
                          args.per_class, args.mutation, args.direction_samples)
        report["models"]["funnel_vae_python_lines"] = {
            "training": training, "kind_counts": {str(k): v for k, v in counts.items()}, "probes": probes, **figures}
        print_model("funnel_vae_python_lines", report["models"]["funnel_vae_python_lines"], started)

        # digits-text
        folder = Path(scratch) / "digits-text"
        results = train_model("digits-text", folder, args.digits_text_steps, train_args=["--probe", "False"])
        model = FunnelVaeModel.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        digits = load_dataset_for_training("digits-text")
        names = digits["train"].features["label"].names
        figures = measure("digits-text", model, tokenizer, digits, names, digits_judge, args.per_class,
                          args.mutation, args.direction_samples, image_judge=True)
        report["models"]["funnel_vae_digits_text"] = {
            "training": {"steps": results["global_step"], "minutes": results["train_runtime_seconds"] / 60,
                         "token_accuracy": results.get("eval_token_accuracy")}, **figures}
        print_model("funnel_vae_digits_text", report["models"]["funnel_vae_digits_text"], started)
    report["command"] = "python -m benchmarks.latent_editing_text " + " ".join(argv if argv is not None else
                                                                               __import__("sys").argv[1:])
    output = RESULTS / ("latent_editing_text_quick.json" if args.quick else "latent_editing_text.json")
    output.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {output} ({time.perf_counter() - started:.0f} s)")


def markdown(rows, keys) -> str:
    """Shares as percentages; strengths, distances, names and counts as they are."""
    def cell(key, value):
        shares = ("strength", "distance_over_latent_norm")
        return f"{100 * value:.1f}%" if isinstance(value, float) and key not in shares else f"{value:g}" \
            if isinstance(value, float) else str(value)

    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] +
                      ["| " + " | ".join(cell(key, row[key]) for key in keys) + " |" for row in rows])


def print_model(name, figures, started):
    print(f"\n{name} ({time.perf_counter() - started:.0f} s)")
    print(markdown(figures["edits"], ["direction", "strength", "to_target", "well_formed", "still_source", "changed",
                                      "distance_over_latent_norm"]))
    print(markdown(figures["breeding"], ["generator", "valid", "novel", "valid_and_novel"]))
    print(markdown(figures["token_swaps"], ["token", "characters", "text_changed", "change_inside_token_span",
                                            "label_changed_to_b", "label_kept"]))
    for strip in figures["strips"]:
        print(f"{strip['source']} -> {strip['target']}: " + " | ".join(repr(t) for t in strip["strip"].values()))

if __name__ == "__main__":
    main()
