"""hf_ae.editing: latent directions per label (class means, linear probe normals), saved next to the model and loaded
back; the probe's linear kernel and the RBF kernel's sample of the training rows (issue 23, part 1)."""

import json

import numpy as np
import pytest
import torch

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.cli import main
from hf_ae.data import load_dataset_for_training
from hf_ae.editing import LatentDirections, compute_directions, probe_normals
from hf_ae.evaluation import probe as probe_module
from hf_ae.evaluation.probe import GRID_SIZES, encode_dataset, run_probe

TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, latent_dim=2)


def tiny_text_model():
    from hf_ae import FunnelVaeConfig, FunnelVaeModel

    torch.manual_seed(0)
    return FunnelVaeModel(FunnelVaeConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, decoder_num_attention_heads=2,
        block_sizes=[1, 1], latent_dim=4, num_latent_tokens=4, decoder_num_hidden_layers=1,
        max_sequence_length=32)).eval()


@pytest.fixture(scope="module")
def digits():
    return load_dataset_for_training("digits", max_train_samples=200, max_eval_samples=60)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PatchVaeModel(PatchVaeConfig(**TINY)).eval()


def test_probe_normals_are_the_hyperplane_normals_in_latent_space_not_in_the_standardised_features():
    """Two classes apart along (1, 1), then axis 1 stretched 10 times: the boundary x0 + x1 / 10 = 0 has the normal
    (1, 0.1) in latent space, while the standardised features weigh both axes alike, (1, 1). The normal is mapped
    back through the standardisation; the other class's normal is its negation. Three classes at 2·e_k: class k
    against the rest points along its own axis and away from the others'."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    latents = rng.normal(0, 1.0, (400, 2)) + np.where(labels[:, None] == 1, 1.5, -1.5)
    latents[:, 1] *= 10
    normals = probe_normals(latents, labels, [0, 1])
    expected = np.array([1.0, 0.1]) / np.linalg.norm([1.0, 0.1])
    assert normals[1] @ expected > 0.99, normals
    assert np.allclose(normals[0], -normals[1])
    labels = np.repeat([0, 1, 2], 60)
    latents = rng.normal(0, 0.3, (180, 3)) + 2.0 * np.eye(3)[labels]
    normals = probe_normals(latents, labels, [0, 1, 2])
    assert np.allclose(np.linalg.norm(normals, axis=1), 1)
    # a max-margin solver gives (2·e_k - e_others) / sqrt(6); SGD's hinge solution is near it: its own axis first
    assert all(normals[k].argmax() == k and normals[k, k] > 0.6 for k in range(3)), normals
    assert (normals[~np.eye(3, dtype=bool)] < 0).all(), normals


def test_directions_are_class_mean_differences_in_the_latent_layout_and_normals_have_their_norm(model, digits):
    train = digits["train"]
    directions = compute_directions(model, train, dataset_name="digits")
    latents = encode_dataset(model, train, as_tokens=False)  # (N, 4, 2)
    labels = np.asarray(train["label"])
    assert directions.labels == [str(k) for k in range(10)] and directions.latent_shape == (4, 2)
    expected = latents[labels == 7].mean(0) - latents[labels != 7].mean(0)
    assert torch.allclose(directions.direction(7), torch.from_numpy(expected).float(), atol=1e-5)
    for label in directions.labels:
        assert torch.isclose(directions.direction(label, "probe_normal").norm(),
                             directions.direction(label).norm(), rtol=1e-4)
    # the move between two labels' centres takes the one centre onto the other
    assert torch.allclose(directions.centroids["3"] + directions.between(3, 8), directions.centroids["8"])
    with pytest.raises(KeyError, match="the labels are"):
        directions.direction("eleven")
    with pytest.raises(KeyError, match="no 'pca' directions"):
        directions.direction(7, "pca")
    # past max_rows, the class means of a seeded sample of that many rows
    sampled = compute_directions(model, train, methods=["class_means"], max_rows=120, seed=3)
    assert sampled.metadata["train_samples"] == 120 and sampled.metadata["train_rows_available"] == len(train)
    rows = train.shuffle(seed=3).select(range(120))
    sample_latents, sample_labels = encode_dataset(model, rows, as_tokens=False), np.asarray(rows["label"])
    expected = sample_latents[sample_labels == 7].mean(0) - sample_latents[sample_labels != 7].mean(0)
    assert torch.allclose(sampled.direction(7), torch.from_numpy(expected).float(), atol=1e-5)
    with pytest.raises(ValueError, match="non-empty subset"):
        compute_directions(model, train, methods=["pca"])
    with pytest.raises(ValueError, match="no 'label' column"):
        compute_directions(model, train.remove_columns("label"))


def test_directions_round_trip_through_a_folder_and_a_missing_file_says_how_to_write_them(model, digits, tmp_path):
    directions = compute_directions(model, digits["train"], methods=["class_means"], dataset_name="digits")
    paths = directions.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in paths)
    loaded = LatentDirections.from_pretrained(tmp_path)
    assert loaded.labels == directions.labels and loaded.methods == ["class_means"]
    assert loaded.metadata["dataset"] == "digits" and loaded.metadata["train_samples"] == 200
    for label in directions.labels:
        assert torch.equal(loaded.direction(label), directions.direction(label))
        assert torch.equal(loaded.centroids[label], directions.centroids[label])
    with pytest.raises(OSError, match="--save_directions"):
        LatentDirections.from_pretrained(tmp_path / "elsewhere")


def test_rbf_probe_learns_on_a_stratified_sample_past_its_limit_and_linear_on_every_row(model, digits, monkeypatch):
    messages = []
    monkeypatch.setattr(probe_module.logger, "warning", messages.append)
    assert run_probe(model, digits, progress=False)["train_samples"] == 200  # 200² x 64 pixels: within the limit
    assert messages == []
    rbf = run_probe(model, digits, max_rbf_rows=50, progress=False)
    assert len(messages) == 1 and "sample of 50 of the 200 training rows" in messages[0] and "--kernel linear" in messages[0]
    assert rbf["train_samples"] == 50 and rbf["train_rows_available"] == 200 and rbf["kernel"] == "rbf"
    assert rbf["num_classes"] == 10  # stratified: every class is in the sample
    linear = run_probe(model, digits, kernel="linear", max_rbf_rows=50, progress=False)
    assert len(messages) == 1  # the linear kernel takes every row and says nothing
    assert linear["train_samples"] == 200 and linear["kernel"] == "linear"
    assert linear["raw_inputs"] > 0.8  # digits' pixels separate linearly
    assert GRID_SIZES["linear"] < GRID_SIZES["rbf"]
    with pytest.raises(ValueError, match="kernel must be one of"):
        run_probe(model, digits, kernel="poly")


def test_probe_command_writes_the_linear_probe_and_the_directions(model, tmp_path, capsys):
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert main(["probe", "--model", str(folder), "--dataset", "digits", "--max_train_samples", "200",
                 "--max_eval_samples", "60", "--kernel", "linear", "--save_directions"]) == 0
    out = capsys.readouterr().out
    assert "SVM probe (linear kernel)" in out and "wrote the directions of 10 labels" in out
    results = json.loads((folder / "probe_svm_digits.json").read_text())
    assert results["kernel"] == "linear" and results["train_samples"] == 200
    loaded = LatentDirections.from_pretrained(folder)
    assert loaded.methods == ["class_means", "probe_normal"] and loaded.latent_shape == (4, 2)
    with pytest.raises(SystemExit):
        main(["probe", "--model", str(folder), "--kernel", "poly"])


# ------------------------------------------------------------------------------------------ latent editing
def test_edit_latents_moves_only_the_chosen_tokens_by_each_strength():
    latents = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0))  # (B, T, d)
    direction = torch.ones(4, 2)
    edited = PatchVaeModel.edit_latents(latents, direction, [0.0, 2.0], tokens=[1, 3])
    assert edited.shape == (2, 3, 4, 2)
    assert torch.equal(edited[0], latents)
    moved = edited[1] - latents
    assert torch.equal(moved[:, [1, 3]], torch.full((3, 2, 2), 2.0)) and not moved[:, [0, 2]].any()
    # latent maps (C, h, w): a token is a position, every channel of it moves
    mask = PatchVaeModel.latent_token_mask((3, 2, 2), [2])
    assert torch.equal(mask[:, 1, 0], torch.ones(3)) and mask.sum() == 3
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        PatchVaeModel.latent_token_mask((4, 2), [4])
    with pytest.raises(ValueError, match="one input's latents have"):
        PatchVaeModel.edit_latents(latents, torch.ones(2, 4), [1.0])


def test_editing_pipeline_on_an_image_model_without_hf_ae(model, digits, tmp_path):
    """Saved with its directions, the folder edits in a process where `import hf_ae` fails: strength 0 is the
    reconstruction, a strip has one image per strength, a direction of your own works, and the errors say why."""
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    compute_directions(model, digits["train"], methods=["class_means"]).save_pretrained(folder)
    code = f"""
import sys, json
sys.modules["hf_ae"] = None
import numpy as np, torch
from transformers import pipeline
folder = {str(folder)!r}
image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
edit = pipeline("latent-editing", model=folder, trust_remote_code=True)
reconstruct = pipeline("image-reconstruction", model=folder, trust_remote_code=True)
strip = edit(image, direction="3", strength=[0.0, 1.0, 2.0])
one = edit(image, direction=3, strength=2.0)
own = edit(image, direction=torch.zeros(4, 2), strength=5.0, tokens=[0])
errors = []
for kwargs in ({{"direction": "eleven"}}, {{"direction": "3", "method": "probe_normal"}}, {{}},
               {{"direction": torch.zeros(2, 4)}}):
    try:
        edit(image, **kwargs)
    except Exception as error:
        errors.append(str(error).splitlines()[0][:120])
print(json.dumps({{
    "strengths": [frame["strength"] for frame in strip],
    "zero_is_reconstruction": np.array_equal(np.array(strip[0]["image"]), np.array(reconstruct(image))),
    "moved": not np.array_equal(np.array(strip[2]["image"]), np.array(strip[0]["image"])),
    "scalar_is_strip_end": np.array_equal(np.array(one["image"]), np.array(strip[2]["image"])),
    "own_zero_is_reconstruction": np.array_equal(np.array(own["image"]), np.array(reconstruct(image))),
    "errors": errors,
}}))
"""
    from subprocess_env import isolated_env, run_python

    result = run_python(["-c", code], isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["strengths"] == [0.0, 1.0, 2.0]
    assert report["zero_is_reconstruction"] and report["moved"] and report["scalar_is_strip_end"]
    assert report["own_zero_is_reconstruction"]
    assert [any(part in error for part in parts) for error, parts in zip(report["errors"], (
        ["the labels are"], ["no 'probe_normal' directions"], ["needs direction="], ["one input's latents have"]))] \
        == [True] * 4, report["errors"]


def test_editing_a_text_model_gives_texts_and_a_skip_connection_unet_is_refused():
    from transformers import ByT5Tokenizer

    from hf_ae import UNetAeConfig, UNetAeModel
    from hf_ae.models.pipeline_autoencoder import LatentEditingPipeline

    text = tiny_text_model()
    tokenizer = ByT5Tokenizer(extra_ids=0)
    edit = LatentEditingPipeline(model=text, tokenizer=tokenizer)
    strip = edit("x = 1", direction=torch.randn(4, 4, generator=torch.Generator().manual_seed(1)),
                 strength=[0.0, 3.0], max_new_tokens=8)
    assert [sorted(frame) for frame in strip] == [["strength", "text"]] * 2
    batch = tokenizer(["x = 1"], return_tensors="pt")
    expected = tokenizer.batch_decode(text.reconstruct(**batch, max_new_tokens=8).tolist(), skip_special_tokens=True)
    assert strip[0]["text"] == expected[0]
    unet = UNetAeModel(UNetAeConfig(image_size=8, block_out_channels=[8, 16], skip_connections=True)).eval()
    with pytest.raises(ValueError, match="cannot edit latents"):
        unet.edit(pixel_values=torch.rand(1, 1, 8, 8), direction=torch.zeros(16, 4, 4))


def test_rbf_row_limit_follows_rows_squared_times_features():
    from hf_ae.evaluation.probe import RBF_MAX_WORK, probe_train_rows, rbf_row_limit

    assert rbf_row_limit(8) ** 2 * 8 <= RBF_MAX_WORK < (rbf_row_limit(8) + 1) ** 2 * 8
    assert rbf_row_limit(4096) < rbf_row_limit(64) < rbf_row_limit(8)
    labels = np.repeat(np.arange(4), 500)  # 2,000 rows
    wide = int(RBF_MAX_WORK / 1000**2)  # features at which 1,000 rows reach the limit
    rows = probe_train_rows(labels, "rbf", num_features=wide)
    assert len(rows) == rbf_row_limit(wide) and np.bincount(labels[rows]).min() >= len(rows) // 4 - 1
    assert probe_train_rows(labels, "rbf", num_features=8) is None
    assert probe_train_rows(labels, "linear", num_features=wide) is None



def test_the_rbf_probes_sample_keeps_classes_of_one_row_and_the_others_shares():
    """python-lines' module labels have classes of one row in a sample: the stratified sample takes one row of
    every class and shares the rest by the classes' sizes (scikit-learn's stratified split refused them)."""
    from hf_ae.evaluation.probe import stratified_rows

    labels = np.concatenate([np.zeros(500), np.ones(300), np.arange(2, 50)])  # 2 big classes, 48 of one row
    rows = stratified_rows(labels, 100)
    assert len(rows) == len(set(rows.tolist())) == 100 and len(set(labels[rows])) == 50
    assert np.bincount(labels[rows].astype(int))[:2].tolist() == [32, 20]  # 52 rows shared 499 : 299
    assert np.array_equal(rows, stratified_rows(labels, 100))  # seeded
    fewer = stratified_rows(labels, 20)  # fewer rows than classes: one row each of 20 classes
    assert len(fewer) == 20 and len(set(labels[fewer])) == 20
    assert len(stratified_rows(labels, 10_000)) == len(labels)
    with_rare = np.array(["ast.py"] * 3000 + ["a.py", "b.py"] + ["c.py"] * 2000)
    assert len(run_rows := probe_module.probe_train_rows(with_rare, "rbf", num_features=10**6)) == \
        probe_module.rbf_row_limit(10**6) and {"a.py", "b.py"} <= set(with_rare[run_rows])

# ------------------------------------------------------------------------------------------------ breeding
def test_cross_latents_takes_each_token_from_its_parent_in_every_latent_layout():
    parents = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (P, T, d)
    children = PatchVaeModel.cross_latents(parents, [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]])
    assert torch.equal(children[0], parents[0]) and torch.equal(children[1], parents[1])
    assert torch.equal(children[2], torch.stack([parents[0, 0], parents[1, 1], parents[1, 2], parents[0, 3]]))
    maps = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))  # (P, C, h, w): a token per position
    child = PatchVaeModel.cross_latents(maps, [0, 0, 1, 0])[0]
    expected = maps[0].clone()
    expected[:, 1, 0] = maps[1][:, 1, 0]  # position 2 of 2x2, row-major
    assert torch.equal(child, expected)
    with pytest.raises(ValueError, match=r"shape \(children, 4\)"):
        PatchVaeModel.cross_latents(parents, [[0, 1]])
    with pytest.raises(ValueError, match="name parents 0..1"):
        PatchVaeModel.cross_latents(parents, [[0, 2, 0, 0]])


def test_breed_latents_draws_genes_from_the_seed_and_mutates_by_sigma():
    parents = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(0))
    breed = PatchVaeModel.breed_latents
    first, genes = breed(parents, 50, generator=torch.Generator().manual_seed(1))
    again, same_genes = breed(parents, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and torch.equal(genes, same_genes)
    assert genes.shape == (50, 16) and set(genes.unique().tolist()) == {0, 1, 2}  # every parent gives tokens
    rows = torch.arange(16)
    assert all(torch.equal(first[c], parents[genes[c], rows]) for c in range(50))  # no mutation: exact tokens
    mutated, mutated_genes = breed(parents, 50, mutation=0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mutated_genes, genes)
    assert abs((mutated - first).std().item() - 0.3) < 0.02  # 3,200 draws of N(0, 0.3²)
    with pytest.raises(ValueError, match="mutation is the noise's standard deviation"):
        breed(parents, 2, mutation=-1.0)


def test_breeding_pipeline_without_hf_ae_breeds_generations_and_swaps_tokens(model, tmp_path):
    """In a process where `import hf_ae` fails: children of two images; a child given back as a parent is used by
    its latents (not re-encoded); explicit genes swap one latent token."""
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    code = f"""
import sys, json
sys.modules["hf_ae"] = None
import torch
from transformers import pipeline
breed = pipeline("latent-breeding", model={str(folder)!r}, trust_remote_code=True)
generator = torch.Generator().manual_seed(0)
a, b = torch.rand(1, 8, 8, generator=generator), torch.rand(1, 8, 8, generator=generator)
children = breed([a, b], num_children=6, mutation=0.1, seed=0)
again = breed([a, b], num_children=6, mutation=0.1, seed=0)
grandchildren = breed([children[1], children[4]], genes=[[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]])
swapped = breed([a, b], genes=[[0, 0, 1, 0]])
plain = breed([a, b], genes=[[0, 0, 0, 0], [1, 1, 1, 1]])
errors = []
for parents, kwargs in (([a], {{}}), ([a, b], {{"genes": [[0, 3, 0, 0]]}}), ([a, b], {{"mutation": -1}})):
    try:
        breed(parents, **kwargs)
    except Exception as error:
        errors.append(str(error).splitlines()[0][:100])
print(json.dumps({{
    "keys": sorted(children[0]),
    "size": list(children[0]["image"].size),
    "genes": [len(child["genes"]) for child in children],
    "seeded": all(torch.equal(x["latents"], y["latents"]) for x, y in zip(children, again)),
    "generation_uses_latents": torch.equal(grandchildren[0]["latents"], children[1]["latents"])
        and torch.equal(grandchildren[1]["latents"], children[4]["latents"]),
    "crossed": torch.equal(grandchildren[2]["latents"][1], children[4]["latents"][1])
        and torch.equal(grandchildren[2]["latents"][0], children[1]["latents"][0]),
    "swap": torch.equal(swapped[0]["latents"][[0, 1, 3]], plain[0]["latents"][[0, 1, 3]])
        and torch.equal(swapped[0]["latents"][2], plain[1]["latents"][2]),
    "errors": errors,
}}))
"""
    from subprocess_env import isolated_env, run_python

    result = run_python(["-c", code], isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["keys"] == ["genes", "image", "latents"] and report["size"] == [8, 8]
    assert report["genes"] == [4] * 6 and report["seeded"]
    assert report["generation_uses_latents"] and report["crossed"] and report["swap"]
    assert [any(part in error for part in parts) for error, parts in zip(report["errors"], (
        ["two or more parents"], ["name parents 0..1"], ["mutation is the noise"]))] == [True] * 3, report["errors"]


def test_breeding_a_text_model_gives_texts():
    from transformers import ByT5Tokenizer

    from hf_ae.models.pipeline_autoencoder import LatentBreedingPipeline

    text = tiny_text_model()
    breed = LatentBreedingPipeline(model=text, tokenizer=ByT5Tokenizer(extra_ids=0))
    children = breed(["x = 1", "return y"], num_children=3, seed=0, max_new_tokens=8)
    assert len(children) == 3 and all(isinstance(child["text"], str) and len(child["genes"]) == 4 for child in children)


def test_training_with_save_directions_writes_them_and_a_retrain_without_removes_the_old_ones(tmp_path, monkeypatch):
    """`--save_directions` writes the directions of the training labels next to the model, as compute_directions
    gives them on the saved model, and the card names the labels; retraining into the folder without it removes
    them (they belong to the old weights); data without labels and a patch prior are refused before training."""
    from hf_ae.training import parse_args, train
    from hf_ae.training import trainer as trainer_module

    output_dir = tmp_path / "run"
    argv = ["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir), "--config_overrides",
            "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32,latent_dim=2",
            "--max_train_samples", "60", "--max_eval_samples", "20", "--per_device_train_batch_size", "8",
            "--num_sample_images", "2", "--max_steps", "2", "--probe", "False"]
    train(*parse_args(argv + ["--save_directions"]))
    saved = LatentDirections.from_pretrained(output_dir)
    model = PatchVaeModel.from_pretrained(output_dir).eval()
    train_split = load_dataset_for_training("digits", max_train_samples=60, max_eval_samples=20)["train"]
    expected = compute_directions(model, train_split, methods=["class_means"])
    assert saved.labels == [str(k) for k in range(10)] and saved.methods == ["class_means", "probe_normal"]
    for label in saved.labels:
        torch.testing.assert_close(saved.direction(label), expected.direction(label), rtol=1e-4, atol=1e-5)
    assert "This repository has the directions of the labels 0, 1, 2" in (output_dir / "README.md").read_text()

    train(*parse_args(argv + ["--overwrite_output_dir"]))
    assert not (output_dir / "latent_directions.safetensors").exists()
    assert not (output_dir / "latent_directions.json").exists()
    assert "This repository has the directions" not in (output_dir / "README.md").read_text()

    load = trainer_module.load_datasets
    monkeypatch.setattr(trainer_module, "load_datasets",
                        lambda *args: load(*args).remove_columns("label"))
    with pytest.raises(ValueError, match="--save_directions writes a direction per label, but the training data "
                                         "has no 'label' column"):
        train(*parse_args(argv + ["--save_directions", "--output_dir", str(tmp_path / "unlabelled")]))
    assert not (tmp_path / "unlabelled" / "config.json").exists()
    monkeypatch.setattr(trainer_module, "load_datasets", load)
    prior = ["--model", "patch_prior", "--autoencoder", str(output_dir), "--dataset", "digits", "--output_dir",
             str(tmp_path / "prior"), "--max_steps", "1", "--save_directions"]
    with pytest.raises(ValueError, match="a patch prior has no latents of its own to edit"):
        train(*parse_args(prior))
