"""Tests for hf_ae.hub against the local Hub API server of tests/hub_server.py.

Client code runs in subprocesses (see `run_client`) because huggingface_hub reads HF_ENDPOINT at import.
"""

import base64
import contextlib
import hashlib
import json
import socket
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

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
# *.safetensors is in the Hub's default .gitattributes; a PNG is binary (NUL bytes in its first 512).
LFS_FILES = ["model.safetensors", "reconstructions.png"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def request_log(tmp_path: Path) -> list[str]:
    """The hub_endpoint server's request log ("METHOD path status details..." per request)."""
    return (tmp_path / "hub" / "requests.log").read_text().splitlines()


def log_lines(log: list[str], method_and_path: str) -> list[list[str]]:
    """The details (words after the status) of every `method_and_path` request that answered 200."""
    return [line.split()[3:] for line in log if line.startswith(f"{method_and_path} 200")]


def test_push_then_snapshot_download_roundtrip(hub_endpoint, tmp_path):
    """Weights and images go through the LFS batch API as on the Hub, text files inside the commit; the
    download is the folder byte for byte; pushing the unchanged folder again uploads and commits nothing."""
    folder = make_model_folder(tmp_path / "saved")
    before = folder_state(folder)
    code = f"""
        from hf_ae.hub import push_to_hub
        print(push_to_hub({str(folder)!r}, "alice/tiny"))
        print(push_to_hub({str(folder)!r}, "alice/tiny"))  # unchanged
    """
    first, second = run_client(code, hub_env(hub_endpoint, tmp_path / "pusher")).stdout.splitlines()[-2:]
    assert first.startswith(f"{hub_endpoint}/alice/tiny/commit/")
    assert second == first  # nothing changed: no new commit
    assert folder_state(folder) == before  # pushing only reads the folder

    log = request_log(tmp_path)
    assert not any("xet" in line.lower() for line in log), log
    second_push = max(i for i, line in enumerate(log) if line.startswith("POST /api/repos/create "))
    log, log_of_second_push = log[:second_push], log[second_push:]
    sha256 = {name: sha256_of(folder / name) for name in LFS_FILES}
    (batch,) = log_lines(log, "POST /alice/tiny.git/info/lfs/objects/batch")
    assert sorted(batch) == sorted(f"upload={oid}" for oid in sha256.values())
    for name, oid in sha256.items():
        assert log_lines(log, f"PUT /_lfs_upload/alice/tiny/{oid}") == [
            [f"{(folder / name).stat().st_size}B"]
        ]
    assert len(log_lines(log, "POST /alice/tiny.git/info/lfs/objects/verify")) == len(LFS_FILES)
    (commit,) = log_lines(log, "POST /api/models/alice/tiny/commit/main")
    assert sorted(commit) == sorted(
        f"{'lfsFile' if name in LFS_FILES else 'file'}={name}" for name in UPLOADED
    )
    # The second push: the batch call finds the LFS objects stored (no upload), and the preupload oids (sha256
    # for LFS files, git oid for the others) tell the client that nothing changed (no commit).
    assert sorted(log_lines(log_of_second_push, "POST /alice/tiny.git/info/lfs/objects/batch")[0]) == sorted(
        f"stored={oid}" for oid in sha256.values()
    )
    assert not any(
        line.startswith(("PUT ", "POST /api/models/alice/tiny/commit/")) for line in log_of_second_push
    )

    code = """
        import json
        from huggingface_hub import HfApi, snapshot_download
        tree = HfApi().list_repo_tree('alice/tiny', recursive=True)
        siblings = HfApi().model_info('alice/tiny', files_metadata=True).siblings
        print(json.dumps({
            "snapshot": snapshot_download('alice/tiny'),
            "tree_lfs": {f.path: f.lfs and [f.lfs.sha256, f.lfs.size] for f in tree if hasattr(f, 'lfs')},
            "info_lfs": {s.rfilename: s.lfs and [s.lfs.sha256, s.lfs.size] for s in siblings},
        }))
    """
    proc = run_client(code, hub_env(hub_endpoint, tmp_path / "downloader"), without_hf_ae=True)
    report = json.loads(proc.stdout.splitlines()[-1])
    snapshot = Path(report["snapshot"])
    downloaded = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert downloaded == [".gitattributes", *UPLOADED]  # a new repo has the Hub's .gitattributes
    for name in UPLOADED:
        assert (snapshot / name).read_bytes() == (folder / name).read_bytes(), name
    assert snapshot.name == first.rsplit("/", 1)[-1]  # the snapshot is the pushed commit
    # LFS files are cached under their sha256 (the X-Linked-Etag), and listed with it.
    assert (snapshot / "model.safetensors").resolve().name == sha256["model.safetensors"]
    expected = {name: [sha256[name], (folder / name).stat().st_size] if name in LFS_FILES else None
                for name in [".gitattributes", *UPLOADED]}  # fmt: skip
    assert report["tree_lfs"] == report["info_lfs"] == expected


def test_second_push_updates_main_then_pr_and_branch_pushes(hub_endpoint, tmp_path):
    """With Xet enabled (the hf_xet pipelined upload_folder), a folder of text files goes as regular files."""
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
    proc = run_client(code, hub_env(hub_endpoint, tmp_path / "pusher", disable_xet=False))
    first, second, pr, dev = proc.stdout.splitlines()[-4:]
    first_sha, second_sha = first.rsplit("/", 1)[-1], second.rsplit("/", 1)[-1]
    assert first_sha != second_sha
    assert pr == f"{hub_endpoint}/alice/tiny/discussions/1"
    assert dev.startswith(f"{hub_endpoint}/alice/tiny/commit/")
    log = request_log(tmp_path)
    assert not any("lfs" in line.lower() or "xet" in line.lower() for line in log), log
    commits = [line.split()[1].rsplit("/", 1)[-1:] + line.split()[3:] for line in log if "/commit/" in line]
    assert commits == [  # only what changed is committed
        ["main", "file=config.json"], ["main", "file=config.json"],
        ["refs%2Fpr%2F1", "file=extra.txt"], ["dev", "file=extra.txt"],
    ]  # fmt: skip

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
    assert result["main_files"] == [".gitattributes", "config.json"]  # neither the PR nor dev touched main
    assert result["pr_files"] == result["dev_files"] == [".gitattributes", "config.json", "extra.txt"]
    assert result["dev_sha"] == dev.rsplit("/", 1)[-1]


def test_hub_server_answers_and_refuses_lfs_uploads_as_the_hub_does(hub_endpoint):
    """The server's side of the LFS route, in-process: which files preupload sends to LFS, and the refusals
    a client that skipped a step would get (the round trip above covers the accepted path)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(method, path, payload=None, *, token=True, data=None):
        if payload is not None:
            data = json.dumps(payload).encode()
        headers = {"Authorization": "Bearer test-token"} if token else {}
        request = urllib.request.Request(f"{hub_endpoint}{path}", data=data, method=method, headers=headers)
        try:
            with opener.open(request) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    assert call("POST", "/api/repos/create", {"name": "lfs", "organization": "alice"})[0] == 200
    files = {
        "README.md": (b"# text\n", 7), "nested/model.safetensors": (b"{}", 2), "weights.pt": (b"x", 1),
        "image.png": (b"\x89PNG\r\n\x1a\n\x00\x00", 10), "big.txt": (b"a" * 512, 10 * 2**20),
        "saved_model/variables/data": (b"v", 1), "notes.txt": (b"a" * 512, 10 * 2**20 - 1),
    }  # fmt: skip
    payload = {
        "files": [{"path": p, "sample": b64(sample), "size": size} for p, (sample, size) in files.items()]
    }
    status, answer = call("POST", "/api/models/alice/lfs/preupload/main", payload)
    assert status == 200
    modes = {f["path"]: f["uploadMode"] for f in answer["files"]}
    assert modes == {p: "regular" if p in ("README.md", "notes.txt") else "lfs" for p in files}

    weights = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    oid = hashlib.sha256(weights).hexdigest()
    lfs_file = {
        "key": "lfsFile",
        "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": len(weights)},
    }
    header = {"key": "header", "value": {"summary": "add"}}

    def commit(*items):
        return call(
            "POST",
            "/api/models/alice/lfs/commit/main",
            data=b"\n".join(json.dumps(i).encode() for i in items),
        )

    assert commit(header, lfs_file)[0] == 400  # not uploaded yet
    regular = {
        "key": "file",
        "value": {"path": "w.safetensors", "content": b64(weights), "encoding": "base64"},
    }
    assert commit(header, regular)[0] == 400  # weights must not bypass LFS
    batch = {"operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
             "objects": [{"oid": oid, "size": len(weights)}], "ref": {"name": "main"}}  # fmt: skip
    status, answer = call("POST", "/alice/lfs.git/info/lfs/objects/batch", batch)
    assert status == 200 and answer["transfer"] == "basic"
    actions = answer["objects"][0]["actions"]
    upload, verify = urlsplit(actions["upload"]["href"]).path, urlsplit(actions["verify"]["href"]).path
    # A chunk_size in the upload header would switch the client to the multipart transfer.
    assert "chunk_size" not in actions["upload"]["header"]
    assert call("POST", verify, {"oid": oid, "size": len(weights)})[0] == 404
    assert call("PUT", upload, data=weights)[0] == 400  # a presigned URL takes no token
    assert call("PUT", upload, token=False, data=weights[:-1] + b"!")[0] == 400  # sha256 mismatch
    assert call("PUT", upload, token=False, data=weights) == (200, None)
    assert call("POST", verify, {"oid": oid, "size": len(weights)})[0] == 200
    status, answer = call("POST", "/alice/lfs.git/info/lfs/objects/batch", batch)
    assert status == 200 and "actions" not in answer["objects"][0]  # already stored: nothing to upload
    assert commit(header, lfs_file)[0] == 200


@contextlib.contextmanager
def refused_endpoint():
    """An endpoint where connecting is refused: its port stays bound (so no other process can take it) but
    never listens, for as long as the context lasts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


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


def test_push_to_unreachable_hub_fails_and_leaves_folder_unchanged(tmp_path):
    folder = make_model_folder(tmp_path / "saved")
    before = folder_state(folder)
    code = f"from hf_ae.hub import push_to_hub\npush_to_hub({str(folder)!r}, 'alice/tiny')\n"
    with refused_endpoint() as endpoint:
        proc = run_client(code, hub_env(endpoint, tmp_path / "pusher"), check=False)
    assert proc.returncode != 0
    assert "ConnectError" in proc.stderr, proc.stderr[-2000:]
    assert folder_state(folder) == before


def test_train_with_push_to_an_unreachable_hub_stops_before_training(tmp_path):
    """--push_to_hub used to fail only after the whole run had trained and saved: the repo is now created (or
    reached) first, and a Hub that cannot be reached stops the run before anything is written."""
    output_dir = tmp_path / "run"
    code = textwrap.dedent(f"""
        from hf_ae.training import parse_args, train
        train(*parse_args(["--model", "patch_vae", "--dataset", "digits", "--max_steps", "2",
                           "--output_dir", {str(output_dir)!r}, "--push_to_hub", "--hub_model_id", "alice/tiny"]))
        """)
    with refused_endpoint() as endpoint:
        proc = run_client(code, hub_env(endpoint, tmp_path / "trainer"), check=False)
    assert proc.returncode != 0
    assert "--push_to_hub: the Hub repo 'alice/tiny' cannot be created or reached" in proc.stderr, proc.stderr[-2000:]
    assert "training patch_vae" not in proc.stdout and not output_dir.exists()


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


@pytest.mark.slow
def test_trained_patch_vae_round_trips_through_the_hub(tmp_path, hub_endpoint):
    """scripts/train.py --push_to_hub sends the weights through LFS; then in a fresh process without hf_ae,
    AutoModel from the Hub reconstructs exactly what AutoModel from the local output folder does, a pipeline
    from the Hub generates, and the downloaded weights and card are the local files."""
    env = hub_env(hub_endpoint, tmp_path)
    output_dir = tmp_path / "trained"
    train_script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    overrides = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"
    proc = run_python([str(train_script), "--max_steps", "3", "--output_dir", str(output_dir),
         "--config_overrides", overrides, "--max_train_samples", "32", "--max_eval_samples", "16",
         "--num_sample_images", "4", "--probe", "False",
         "--push_to_hub", "--hub_model_id", "test-user/patch-vae-tiny"], env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed to" in proc.stdout
    (commit,) = log_lines(request_log(tmp_path), "POST /api/models/test-user/patch-vae-tiny/commit/main")
    assert "lfsFile=model.safetensors" in commit and "file=config.json" in commit

    code = f"""
        import json, torch
        from huggingface_hub import hf_hub_download
        from transformers import AutoModel, pipeline
        repo = "test-user/patch-vae-tiny"
        model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        local = AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
        pixel_values = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            reconstruction, expected = model(pixel_values).reconstruction, local(pixel_values).reconstruction
        samples = pipeline("autoencoder-generation", model=repo, trust_remote_code=True)(2, seed=0)
        print(json.dumps({{
            "module": type(model).__module__, "samples": [s.size for s in samples],
            "equal": torch.equal(reconstruction, expected), "varies": bool(reconstruction.std() > 0),
            "files": {{name: hf_hub_download(repo, name) for name in ["model.safetensors", "README.md"]}},
        }}))
    """
    report = json.loads(run_client(code, env, without_hf_ae=True).stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules") and report["samples"] == [[8, 8], [8, 8]]
    assert report["equal"] and report["varies"]
    for name, path in report["files"].items():
        assert Path(path).read_bytes() == (output_dir / name).read_bytes(), name
    # the card travelled with the model and carries the measured metrics
    card = Path(report["files"]["README.md"]).read_text()
    assert "model-index" in card and "PatchVae" in card


def test_latent_directions_pushed_with_a_model_edit_from_the_hub_without_hf_ae(hub_endpoint, tmp_path):
    """Directions saved next to a model go up with it; the latent-editing pipeline of the pushed repo (remote code,
    no hf_ae) finds them by label, and `LatentDirections.from_pretrained(repo)` reads the same tensors."""
    from hf_ae import PatchVaeConfig, PatchVaeModel
    from hf_ae.data import load_dataset_for_training
    from hf_ae.editing import LatentDirections, compute_directions

    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, latent_dim=2)).eval()
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    digits = load_dataset_for_training("digits", max_train_samples=200, max_eval_samples=10)
    compute_directions(model, digits["train"], methods=["class_means"]).save_pretrained(folder)
    push_in_subprocess(hub_env(hub_endpoint, tmp_path / "pusher"), folder, "alice/editable")

    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = model.encode(pixel_values=image[None]).latents
        direction = LatentDirections.from_pretrained(folder).direction("3")
        expected = model.decode(latents + 2.0 * direction).reconstruction[0, 0]  # (8, 8) in [0, 1]
    code = """
        import json, numpy as np, torch
        from transformers import pipeline
        edit = pipeline("latent-editing", model="alice/editable", trust_remote_code=True)
        image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
        print(json.dumps(np.asarray(edit(image, direction="3", strength=2.0)["image"]).tolist()))
    """
    proc = run_client(code, hub_env(hub_endpoint, tmp_path / "editor"), without_hf_ae=True)
    edited = torch.tensor(json.loads(proc.stdout.splitlines()[-1]), dtype=torch.float32)  # (8, 8) uint8 values
    # The pipeline's PIL image quantises to 8 bits: within one level of the edit computed here.
    assert edited.shape == (8, 8)
    assert (edited - expected.clamp(0, 1) * 255).abs().max() <= 1.0 + 1e-3

    code = """
        import json
        from hf_ae.editing import LatentDirections
        directions = LatentDirections.from_pretrained("alice/editable")
        print(json.dumps({"labels": directions.labels, "methods": directions.methods,
                          "direction_3": directions.direction("3").tolist()}))
    """
    loaded = json.loads(run_client(code, hub_env(hub_endpoint, tmp_path / "reader")).stdout.splitlines()[-1])
    assert loaded["labels"] == [str(k) for k in range(10)] and loaded["methods"] == ["class_means"]
    assert torch.equal(torch.tensor(loaded["direction_3"]), direction)
