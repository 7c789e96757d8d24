"""Tests for hf_ae.hub against the local Hub API server of tests/hub_server.py.

Client code runs in subprocesses (see `run_client`) because huggingface_hub reads HF_ENDPOINT at import.
"""

import json
import socket
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from hub_server import hub_env
from huggingface_hub import EvalResult
from PIL import Image
from safetensors.torch import save_file
from subprocess_env import run_python

from hf_ae.hub import push_to_hub, render_model_card

BERT_CONFIG = {
    "model_type": "bert",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 8,
    "vocab_size": 10,
}

# Two ways upload_folder uploads in huggingface_hub 2.4: the hf_xet pipeline (default when hf_xet is
# installed) and, with HF_HUB_DISABLE_XET=1, the legacy single create_commit. Test both.
UPLOAD_PATHS = pytest.mark.parametrize("disable_xet", [False, True], ids=["xet-pipeline", "legacy-commit"])


def run_client(code: str, env: dict, *, check: bool = True, without_hf_ae: bool = False):
    """Run `code` in a fresh interpreter with `env`; return the CompletedProcess (stdout as text).

    `without_hf_ae=True` makes `import hf_ae` fail there: downloaders must not need our package.
    """
    code = textwrap.dedent(code)
    if without_hf_ae:
        code = 'import sys; sys.modules["hf_ae"] = None\n' + code
    proc = run_python(["-c", code], env)
    if check and proc.returncode != 0:
        pytest.fail(f"client subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def push_in_subprocess(env: dict, folder: Path, repo_id: str) -> str:
    """`hf_ae.hub.push_to_hub(folder, repo_id)` in a subprocess with `env`; returns the URL it returned."""
    code = f"from hf_ae.hub import push_to_hub\nprint(push_to_hub({str(folder)!r}, {repo_id!r}))\n"
    return run_client(code, env).stdout.strip().splitlines()[-1]


def folder_state(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for directories), to compare before/after."""
    return {
        p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")
    }


def make_model_folder(folder: Path) -> Path:
    """A saved-model folder like save_pretrained + a model card writes, plus junk that must be skipped."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG))
    save_file({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, folder / "model.safetensors")
    (folder / "modeling_tiny.py").write_text("import torch\n\nclass Tiny(torch.nn.Module):\n    pass\n")
    (folder / "README.md").write_text("---\nlibrary_name: transformers\ntags: [autoencoder]\n---\n# Tiny\n")
    Image.new("RGB", (4, 3), (200, 10, 30)).save(folder / "reconstructions.png")
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\na\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_tiny.cpython-311.pyc").write_bytes(b"\x00junk")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder


UPLOADED = [
    "README.md",
    "config.json",
    "model.safetensors",
    "modeling_tiny.py",
    "reconstructions.png",
    "tokenizer/vocab.txt",
]


@UPLOAD_PATHS
def test_push_then_snapshot_download_roundtrip(hub_endpoint, tmp_path, disable_xet):
    folder = make_model_folder(tmp_path / "saved")
    before = folder_state(folder)

    env = hub_env(hub_endpoint, tmp_path / "pusher", disable_xet=disable_xet)
    url = push_in_subprocess(env, folder, "alice/tiny")
    assert url.startswith(f"{hub_endpoint}/alice/tiny/commit/")
    assert folder_state(folder) == before  # pushing only reads the folder

    code = "from huggingface_hub import snapshot_download\nprint(snapshot_download('alice/tiny'))\n"
    proc = run_client(code, hub_env(hub_endpoint, tmp_path / "downloader"), without_hf_ae=True)
    snapshot = Path(proc.stdout.strip().splitlines()[-1])
    downloaded = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert downloaded == UPLOADED  # everything but .git/ and __pycache__/
    for name in UPLOADED:
        assert (snapshot / name).read_bytes() == (folder / name).read_bytes(), name
    assert snapshot.name == url.rsplit("/", 1)[-1]  # the snapshot is the pushed commit

    # Everything went through the regular-file commit path: no LFS batch, no Xet token requests.
    log = (tmp_path / "hub" / "requests.log").read_text()
    assert "/commit/main 200" in log
    assert "lfs" not in log and "xet" not in log


def test_second_push_updates_main_then_pr_and_branch_pushes(hub_endpoint, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**BERT_CONFIG, "hidden_size": 8}))
    code = f"""
        from pathlib import Path
        from hf_ae.hub import push_to_hub
        folder = Path({str(folder)!r})
        print(push_to_hub(folder, "alice/tiny"))
        (folder / "config.json").write_text('{{"hidden_size": 16}}')
        print(push_to_hub(folder, "alice/tiny", commit_message="bigger"))
        (folder / "extra.txt").write_text("pr")
        print(push_to_hub(folder, "alice/tiny", create_pr=True))
        print(push_to_hub(folder, "alice/tiny", revision="dev"))  # creates the branch
    """
    proc = run_client(code, hub_env(hub_endpoint, tmp_path / "pusher"))
    first, second, pr, dev = proc.stdout.splitlines()[-4:]
    first_sha, second_sha = first.rsplit("/", 1)[-1], second.rsplit("/", 1)[-1]
    assert first_sha != second_sha
    assert pr == f"{hub_endpoint}/alice/tiny/discussions/1"
    assert dev.startswith(f"{hub_endpoint}/alice/tiny/commit/")

    code = f"""
        import json
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        def files(rev):
            return sorted(f.path for f in api.list_repo_tree('alice/tiny', revision=rev, recursive=True))
        print(json.dumps({{
            "main_sha": api.model_info('alice/tiny').sha,
            "latest": open(hf_hub_download('alice/tiny', 'config.json')).read(),
            "old": open(hf_hub_download('alice/tiny', 'config.json', revision={first_sha!r})).read(),
            "main_files": files('main'),
            "pr_files": files('refs/pr/1'),
            "dev_sha": api.model_info('alice/tiny', revision='dev').sha,
            "dev_files": files('dev'),
        }}))
    """
    proc = run_client(code, hub_env(hub_endpoint, tmp_path / "downloader"), without_hf_ae=True)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["main_sha"] == second_sha
    assert json.loads(result["latest"]) == {"hidden_size": 16}
    assert json.loads(result["old"])["hidden_size"] == 8
    assert result["main_files"] == ["config.json"]  # neither the PR nor the dev branch touched main
    assert result["pr_files"] == result["dev_files"] == ["config.json", "extra.txt"]
    assert result["dev_sha"] == dev.rsplit("/", 1)[-1]


def test_push_rejects_folder_without_config_or_missing(tmp_path):
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no config.json") as err:
        push_to_hub(no_config, "alice/tiny")
    assert str(no_config) in str(err.value)

    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match="does not exist") as err:
        push_to_hub(missing, "alice/tiny")
    assert str(missing) in str(err.value)

    (no_config / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="create_pr"):
        push_to_hub(no_config, "alice/tiny", revision="dev", create_pr=True)


def _closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def test_push_to_unreachable_hub_fails_and_leaves_folder_unchanged(tmp_path):
    folder = make_model_folder(tmp_path / "saved")
    before = folder_state(folder)
    code = f"from hf_ae.hub import push_to_hub\npush_to_hub({str(folder)!r}, 'alice/tiny')\n"
    proc = run_client(code, hub_env(_closed_port_endpoint(), tmp_path / "pusher"), check=False)
    assert proc.returncode != 0
    assert "ConnectError" in proc.stderr, proc.stderr[-2000:]
    assert folder_state(folder) == before


def test_transformers_autoconfig_from_pushed_repo(hub_endpoint, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG))
    # Pushed with huggingface_hub directly (what push_to_hub does, tested above) to skip importing hf_ae.
    code = f"""
        from huggingface_hub import HfApi
        HfApi().create_repo("alice/bert-tiny")
        HfApi().upload_folder(repo_id="alice/bert-tiny", folder_path={str(folder)!r})
    """
    run_client(code, hub_env(hub_endpoint, tmp_path / "pusher"))

    code = """
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained('alice/bert-tiny')
        print(type(config).__name__, config.hidden_size, config.num_attention_heads)
    """
    out = run_client(
        code, hub_env(hub_endpoint, tmp_path / "loader"), without_hf_ae=True
    ).stdout.splitlines()[-1]
    assert out == "BertConfig 8 2"


def test_render_model_card_offline(tmp_path):
    template = tmp_path / "card.md"
    template.write_text(
        "---\n{{ card_data }}\n---\n\n# {{ model_name }}\n\n"
        "Trained on {{ datasets | join(', ') }} for {{ epochs }} epochs by {{ author }}.\n"
    )
    results = [
        EvalResult(
            task_type="image-to-image",
            dataset_type="mnist",
            dataset_name="MNIST",
            dataset_split="test",
            metric_type="mse",
            metric_name="Reconstruction MSE",
            metric_value=0.0123,
        ),
        EvalResult(
            task_type="image-to-image",
            dataset_type="mnist",
            dataset_name="MNIST",
            metric_type="psnr",
            metric_value=27.5,
        ),
    ]
    card = render_model_card(
        template,
        model_name="patch-vae-mnist",
        tags=["autoencoder", "vae"],
        datasets=["mnist"],
        metrics=["mse", "psnr"],
        eval_results=results,
        epochs=3,
        author="Alice",
    )

    text = str(card)
    assert "# patch-vae-mnist" in text
    assert "Trained on mnist for 3 epochs by Alice." in text
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["library_name"] == "transformers"
    assert metadata["tags"] == ["autoencoder", "vae"]
    assert metadata["datasets"] == ["mnist"]
    assert metadata["metrics"] == ["mse", "psnr"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "patch-vae-mnist"
    metrics = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    assert metrics == {"mse": 0.0123, "psnr": 27.5}
    assert card.data.eval_results[0].metric_value == 0.0123

    # A template without a YAML header still gets the metadata.
    plain = tmp_path / "plain.md"
    plain.write_text("# {{ model_name }}\n")
    card = render_model_card(plain, model_name="m", tags=["x"])
    assert str(card).startswith("---\n") and "library_name: transformers" in str(card)
    assert "# m" in card.text


def test_trained_patch_vae_round_trips_through_the_hub(tmp_path, hub_endpoint):
    """scripts/train.py --push_to_hub, then in a fresh process without hf_ae: AutoModel and a pipeline from the Hub
    give the same reconstruction as the local model."""
    env = hub_env(hub_endpoint, tmp_path)
    output_dir = tmp_path / "trained"
    train_script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    proc = run_python([str(train_script), "--max_steps", "3", "--output_dir", str(output_dir),
         "--config_overrides", "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32",
         "--max_train_samples", "32", "--max_eval_samples", "16", "--num_sample_images", "4",
         "--push_to_hub", "--hub_model_id", "test-user/patch-vae-tiny"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed to" in proc.stdout

    pixel_values = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    code = f"""
        import json, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, pipeline
        repo = "test-user/patch-vae-tiny"
        model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        pixel_values = load_file({str(tmp_path / "inputs.safetensors")!r})["pixel_values"]
        with torch.no_grad():
            save_file({{"reconstruction": model(pixel_values).reconstruction}}, {str(tmp_path / "hub_out.safetensors")!r})
        samples = pipeline("autoencoder-generation", model=repo, trust_remote_code=True)(2, seed=0)
        print(json.dumps({{"module": type(model).__module__, "samples": [s.size for s in samples]}}))
    """
    report = json.loads(run_client(code, env, without_hf_ae=True).stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules") and report["samples"] == [[8, 8], [8, 8]]

    from safetensors.torch import load_file

    from hf_ae import PatchVaeModel

    local = PatchVaeModel.from_pretrained(output_dir).eval()
    with torch.no_grad():
        expected = local(pixel_values).reconstruction
    assert torch.allclose(load_file(tmp_path / "hub_out.safetensors")["reconstruction"], expected, atol=1e-6)
    # the card travelled with the model and carries the measured metric
    card = run_client(
        'from huggingface_hub import hf_hub_download\nprint(open(hf_hub_download("test-user/patch-vae-tiny", "README.md")).read())',
        env,
        without_hf_ae=True,
    ).stdout
    assert "model-index" in card and "PatchVae" in card
