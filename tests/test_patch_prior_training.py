"""PatchPrior through scripts/train.py on the codes of a tiny vq PatchVae trained the same way: the saved prior, its
figures, card and metrics; the arguments it refuses before training; and the Hub round trip (autoencoder pushed
first, the prior trained against its repo id, then loaded by a pipeline where hf_ae is not installed)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hub_server import hub_env
from PIL import Image
from safetensors.torch import load_file
from subprocess_env import REPO_ROOT, run_python
from test_hub import push_in_subprocess, run_client

from hf_ae import PatchPriorModel, PatchVaeConfig, PatchVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.training import parse_args, train

TRAIN_SCRIPT = str(REPO_ROOT / "scripts" / "train.py")
# 8x8 digits in 2x2 patches: 16 codes per image, from a codebook of 16
VQ_OVERRIDES = ("bottleneck=vq,codebook_size=16,latent_dim=4,patch_size=2,hidden_size=16,num_hidden_layers=1,"
                "num_attention_heads=2,intermediate_size=32")
PRIOR_OVERRIDES = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"
TRAIN_SAMPLES, EVAL_SAMPLES = 128, 64


def common_args(output_dir, *extra):
    return ["--dataset", "digits", "--output_dir", str(output_dir), "--max_train_samples", str(TRAIN_SAMPLES),
            "--max_eval_samples", str(EVAL_SAMPLES), "--per_device_train_batch_size", "16", "--logging_steps", "2",
            "--num_sample_images", "4", *extra]


def prior_args(output_dir, autoencoder, *extra, overrides=PRIOR_OVERRIDES):
    return ["--model", "patch_prior", "--autoencoder", str(autoencoder), "--config_overrides", overrides,
            *common_args(output_dir, *extra)]


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    """A tiny vq PatchVae trained with train.py (10 steps: enough for varied codes, not for good images)."""
    output_dir = tmp_path_factory.mktemp("vq") / "vq"
    train(*parse_args(["--model", "patch_vae", "--config_overrides", VQ_OVERRIDES,
                       *common_args(output_dir, "--max_steps", "10", "--probe", "False")]))
    return output_dir


def test_train_writes_a_class_conditional_prior_its_samples_and_card(vq_dir, tmp_path):
    output_dir = tmp_path / "prior"
    results = train(*parse_args(prior_args(output_dir, vq_dir, "--class_conditional", "--max_steps", "30",
                                           "--learning_rate", "3e-3")))
    files = {p.name for p in output_dir.iterdir()}
    expected = {"config.json", "model.safetensors", "configuration_patch_prior.py", "modeling_patch_prior.py",
                "pipeline_autoencoder.py", "README.md", "samples.png", "filling_in.png", "filling_in.gif",
                "all_results.json", "trainer_state.json", "training_args.json"}
    assert expected <= files, expected - files
    assert "reconstructions.png" not in files and not [f for f in files if f.startswith("probe_svm")]
    config = json.loads((output_dir / "config.json").read_text())
    assert config["autoencoder_name_or_path"] == str(vq_dir.resolve())  # a folder is recorded absolute
    assert (config["num_codes"], config["num_patches"], config["num_classes"]) == (16, 16, 10)
    assert all(name.startswith(("transformer.", "lm_head.")) for name in load_file(output_dir / "model.safetensors"))

    # the metrics are the prior's loss on the autoencoder's codes of the test images
    prior = PatchPriorModel.from_pretrained(output_dir).eval()
    test = load_dataset_for_training("digits", max_eval_samples=EVAL_SAMPLES)["test"].with_format("torch")
    with torch.no_grad():
        codes = prior.autoencoder.encode(test[:]["pixel_values"]).codes  # loaded from the recorded folder
        outputs = prior(input_ids=codes, class_labels=test[:]["label"])
    assert codes.shape == (EVAL_SAMPLES, 16)
    assert results["eval_nll_per_code"] == pytest.approx(outputs.loss.item(), rel=1e-4)
    # bits per image: -log2 of the probability of each of an image's 16 codes, summed, averaged over the images
    log2_probabilities = F.log_softmax(outputs.logits.double(), dim=-1) / math.log(2)  # (64, 16, 16 codes)
    bits = -log2_probabilities.gather(-1, codes.long()[..., None]).sum((1, 2)).mean().item()
    assert results["eval_bits_per_image"] == pytest.approx(bits, rel=1e-4)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0] < math.log(16) * 1.2

    card = (output_dir / "README.md").read_text()
    assert "PatchPrior" in card and "model-index" in card and "unconditional-image-generation" in card
    assert f"{results['eval_bits_per_image']:.6g}" in card and "A uniform guess needs 64.0 bits per image" in card
    assert "a **class token** (one of 10 classes)" in card and "one row per class" in card
    # grids of 64 px cells with 2 px borders: 8 samples per row x 10 classes; frames 0..16 x 4 images
    with Image.open(output_dir / "samples.png") as samples:
        assert samples.size == (530, 662)
    with Image.open(output_dir / "filling_in.png") as strip:
        assert strip.size == (1124, 266)
    with Image.open(output_dir / "filling_in.gif") as gif:
        assert gif.n_frames == 17


def test_unconditional_prior_ignores_the_labels(vq_dir, tmp_path):
    output_dir = tmp_path / "prior"
    results = train(*parse_args(prior_args(output_dir, vq_dir, "--max_steps", "2")))  # on labelled digits
    assert json.loads((output_dir / "config.json").read_text())["num_classes"] == 0
    prior = PatchPriorModel.from_pretrained(output_dir).eval()
    test = load_dataset_for_training("digits", max_eval_samples=EVAL_SAMPLES)["test"].with_format("torch")
    with torch.no_grad():
        codes = prior.autoencoder.encode(test[:]["pixel_values"]).codes
        # the prior refuses labels outright, so training and evaluation on labelled data cannot have passed them
        with pytest.raises(ValueError, match=r"this prior is unconditional \(num_classes=0\): it takes no class_labels"):
            prior(input_ids=codes, class_labels=test[:]["label"])
        loss = prior(input_ids=codes).loss.item()
    # and the evaluation is the prior's loss on the test codes without them
    assert results["eval_nll_per_code"] == pytest.approx(loss, rel=1e-4)
    assert "Samples from the prior**" in (output_dir / "README.md").read_text()


def test_bad_prior_arguments_are_refused_before_training(vq_dir, tmp_path):
    output_dir = tmp_path / "prior"

    def refused(argv, message):
        with pytest.raises(ValueError, match=message):
            train(*parse_args(argv))
        assert not output_dir.exists()  # nothing was trained or written

    no_autoencoder = prior_args(output_dir, vq_dir)
    del no_autoencoder[2:4]
    refused(no_autoencoder, "--model patch_prior trains on the codes .* pass it as --autoencoder")
    refused(prior_args(output_dir, vq_dir, "--push_to_hub", "--hub_model_id", "user/prior"),
            "a local folder: .*Push the autoencoder first .* pass its repo id as --autoencoder")
    refused(prior_args(output_dir, vq_dir, "--image_size", "16"),
            "takes 8x8 images with 1 channel\\(s\\); the data set has 16x16 with 1")
    kl_dir = tmp_path / "kl"
    PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32)).save_pretrained(kl_dir)
    refused(prior_args(output_dir, kl_dir), "bottleneck='kl'\\) has no discrete codes")
    refused(["--model", "patch_vae", "--autoencoder", str(vq_dir), *common_args(output_dir)],
            "--model patch_vae takes none")
    refused(prior_args(output_dir, vq_dir, "--class_conditional", overrides=PRIOR_OVERRIDES + ",num_classes=5"),
            "config_overrides sets num_classes=5 but the data set has num_classes=10")
    refused(prior_args(output_dir, vq_dir, overrides=PRIOR_OVERRIDES + ",num_classes=3"),
            "num_classes=3 but the train split has labels in \\[0, 9\\]")


@pytest.mark.slow
def test_prior_round_trips_through_the_hub_and_generates_without_hf_ae(vq_dir, tmp_path, hub_endpoint):
    env = hub_env(hub_endpoint, tmp_path)
    push_in_subprocess(env, vq_dir, "test-user/vq-tiny")
    output_dir = tmp_path / "prior"
    proc = run_python([TRAIN_SCRIPT,
         *prior_args(output_dir, "test-user/vq-tiny", "--class_conditional", "--max_steps", "4"),
         "--push_to_hub", "--hub_model_id", "test-user/prior-tiny"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed to" in proc.stdout

    code = f"""
        import io, json, torch
        from PIL import Image
        from safetensors.torch import save_file
        from transformers import AutoModel, pipeline
        repo = "test-user/prior-tiny"
        generate = pipeline("autoencoder-generation", model=repo, trust_remote_code=True)
        filled = generate(3, seed=0, class_labels=[1, 2, 3], top_k=8, return_intermediates=True, gif=True)
        prior = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        out = prior.sample(2, class_labels=[3, 4], generator=torch.Generator().manual_seed(0))
        save_file({{"samples": out.samples, "codes": out.codes}}, {str(tmp_path / "hub_out.safetensors")!r})
        print(json.dumps({{
            "prior_module": type(prior).__module__,
            "autoencoder_module": type(prior.autoencoder).__module__,
            "autoencoder": prior.config.autoencoder_name_or_path,
            "sizes": [r["image"].size for r in filled],
            "frames": [len(r["frames"]) for r in filled],
            "gif_frames": Image.open(io.BytesIO(filled[0]["gif"])).n_frames,
        }}))
    """
    report = json.loads(run_client(code, env, without_hf_ae=True).stdout.strip().splitlines()[-1])
    assert report["prior_module"].startswith("transformers_modules")
    assert report["autoencoder_module"].startswith("transformers_modules")
    assert report["autoencoder"] == "test-user/vq-tiny"
    assert report["sizes"] == [[8, 8]] * 3 and report["frames"] == [17] * 3 and report["gif_frames"] == 17

    # the Hub copy samples what the local model samples with the same seed
    local = PatchPriorModel.from_pretrained(output_dir).eval()
    local.set_autoencoder(PatchVaeModel.from_pretrained(vq_dir).eval())
    expected = local.sample(2, class_labels=[3, 4], generator=torch.Generator().manual_seed(0))
    hub_out = load_file(tmp_path / "hub_out.safetensors")
    assert torch.equal(hub_out["codes"], expected.codes)
    assert torch.allclose(hub_out["samples"], expected.samples, atol=1e-6)
    card = run_client(
        'from huggingface_hub import hf_hub_download\nprint(open(hf_hub_download("test-user/prior-tiny", "README.md")).read())',
        env, without_hf_ae=True,
    ).stdout
    assert "model-index" in card and "https://huggingface.co/test-user/vq-tiny" in card


def test_prior_codes_train_the_same_with_loader_workers(vq_dir, tmp_path):
    """--dataloader_num_workers 2 serves the code batches without changing them (or the trained prior)."""
    trained = {}
    for workers in ("0", "2"):
        output_dir = tmp_path / f"workers_{workers}"
        train(*parse_args(prior_args(output_dir, vq_dir, "--max_steps", "4", "--dataloader_num_workers", workers)))
        trained[workers] = load_file(output_dir / "model.safetensors")
    assert trained["0"].keys() == trained["2"].keys()
    assert all(torch.equal(trained["0"][name], trained["2"][name]) for name in trained["0"])
