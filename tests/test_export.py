"""hf_ae.export: torch.export programs and ONNX files of every image model's encode and decode, with a dynamic batch
size, checked as a client runs them: in a process where `import hf_ae` fails, with torch.export.load and onnxruntime,
against the eager model's outputs."""

import json

import pytest
import torch
from safetensors.torch import save_file
from subprocess_env import isolated_env, run_python

from hf_ae import (
    FunnelVaeConfig,
    FunnelVaeModel,
    PatchPriorConfig,
    PatchPriorModel,
    PatchVaeConfig,
    PatchVaeModel,
    UNetAeConfig,
    UNetAeModel,
)
from hf_ae.export import export_model

TINY_PATCH = dict(image_size=8, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64)
TINY_UNET = dict(image_size=16, num_channels=1, block_out_channels=[8, 16])
MODELS = {
    "patch_vae_kl": lambda: PatchVaeModel(PatchVaeConfig(**TINY_PATCH, latent_dim=2)),
    "patch_vae_vq": lambda: PatchVaeModel(PatchVaeConfig(**TINY_PATCH, latent_dim=2, bottleneck="vq", codebook_size=16)),
    "patch_vae_fsq": lambda: PatchVaeModel(PatchVaeConfig(**TINY_PATCH, latent_dim=3, bottleneck="fsq",
                                                          fsq_levels=[4, 4, 4])),
    "unet_ae": lambda: UNetAeModel(UNetAeConfig(**TINY_UNET)),
    "unet_ae_skip_connections": lambda: UNetAeModel(UNetAeConfig(**TINY_UNET, skip_connections=True)),
    "unet_ae_mlp_dot_attention": lambda: UNetAeModel(UNetAeConfig(
        **TINY_UNET, mlp_bottleneck=True, latent_dim=6, mlp_hidden_dim=16, attention="dot", attention_resolutions=[8],
        attention_head_dim=8, norm="group", norm_num_groups=4)),
    # T5 attention in the encoder and decoder: its ONNX files are traced with eager attention (hf_ae.export)
    "funnel_vae_images": lambda: FunnelVaeModel(FunnelVaeConfig(
        modality="image", image_size=8, patch_size=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        block_sizes=[1, 1], latent_dim=4, num_latent_tokens=None, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2)),
}
# Batch sizes other than the export's example (2): one image, and more than diffusers' 64-image branch of Upsample2D
BATCH_SIZES = (1, 3, 65)

CLIENT = """
import json, sys
sys.modules["hf_ae"] = None  # a serving machine: torch and onnxruntime, no hf_ae
import numpy as np, onnxruntime, torch
from safetensors.torch import load_file

folder, reference = sys.argv[1], load_file(sys.argv[2])
report = {}
encode, decode = torch.export.load(f"{folder}/encode.pt2").module(), torch.export.load(f"{folder}/decode.pt2").module()
encode_session = onnxruntime.InferenceSession(f"{folder}/encode.onnx")
decode_session = onnxruntime.InferenceSession(f"{folder}/decode.onnx")
as_tuple = lambda out: out if isinstance(out, (tuple, list)) else (out,)
for batch in BATCH_SIZES:
    images = reference[f"images_{batch}"]
    expected = [reference[f"encoded_{batch}_{i}"] for i in range(sum(k.startswith(f"encoded_{batch}_") for k in reference))]
    expected_images = reference[f"decoded_{batch}"]
    with torch.no_grad():
        encoded = as_tuple(encode(images))
        decoded = decode(*encoded)
    onnx_encoded = encode_session.run(None, {"pixel_values": images.numpy()})
    names = [i.name for i in decode_session.get_inputs()]
    onnx_decoded = decode_session.run(None, dict(zip(names, onnx_encoded)))[0]
    report[batch] = {
        "torch_encode": max((a - b).abs().max().item() for a, b in zip(encoded, expected)),
        "torch_decode": (decoded - expected_images).abs().max().item(),
        "onnx_encode": max(float(np.abs(a - b.numpy()).max()) for a, b in zip(onnx_encoded, expected)),
        "onnx_decode": float(np.abs(onnx_decoded - expected_images.numpy()).max()),
        "onnx_inputs": names,
    }
print(json.dumps(report))
""".replace("BATCH_SIZES", repr(BATCH_SIZES))


@torch.no_grad()
def eager_reference(model) -> dict:
    """For each batch size: images, what eager encode gives (latents [+ skip features]) and decode's images."""
    reference = {}
    config = model.config
    for batch in BATCH_SIZES:
        images = torch.rand(batch, config.num_channels, config.image_size, config.image_size,
                            generator=torch.Generator().manual_seed(batch))
        encoded = model.encode(pixel_values=images)
        skips = encoded.get("skip_features") or ()
        decoded = model.decode(encoded.latents, **({"skip_features": skips} if skips else {})).reconstruction
        reference[f"images_{batch}"] = images
        for index, tensor in enumerate((encoded.latents, *skips)):
            reference[f"encoded_{batch}_{index}"] = tensor.contiguous()
        reference[f"decoded_{batch}"] = decoded
    return reference


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_exported_encode_and_decode_match_eager_without_hf_ae(name, tmp_path):
    """torch.export programs and ONNX files (onnxruntime) give eager's latents and images within 1e-4 at batch sizes
    the export never saw, in a process without hf_ae."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    written = export_model(model, tmp_path / "exported")
    assert sorted(written) == ["decode.onnx", "decode.pt2", "encode.onnx", "encode.pt2"]
    save_file(eager_reference(model), tmp_path / "reference.safetensors")
    result = run_python(["-c", CLIENT, str(tmp_path / "exported"), str(tmp_path / "reference.safetensors")],
                        isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for batch, differences in report.items():
        for part in ("torch_encode", "torch_decode", "onnx_encode", "onnx_decode"):
            assert differences[part] <= 1e-4, (batch, part, differences[part])
    skips = model.config.skip_connections if hasattr(model.config, "skip_connections") else False
    assert report["1"]["onnx_inputs"][0] == "latents" and (len(report["1"]["onnx_inputs"]) > 1) == skips


def test_value_checks_stay_on_in_eager_and_skip_while_exporting():
    """A NaN image is refused in eager; torch.export traces the same model (its value checks would be
    data-dependent control flow, which export cannot trace) and the program checks shapes only."""
    torch.manual_seed(0)
    model = MODELS["patch_vae_kl"]().eval()
    bad = torch.full((2, 1, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        model.encode(pixel_values=bad)
    from hf_ae.export import export_programs

    encode = export_programs(model)["encode"].module()
    assert torch.isnan(encode(bad)).all()  # exported: no value check
    with pytest.raises(Exception, match="(?i)shape|size|guard|expected"):
        encode(torch.rand(2, 1, 16, 16))  # the shape is still checked


def test_onnx_traces_eager_attention_and_the_model_keeps_its_own():
    """The .pt2 programs trace the model's attention (sdpa), the ONNX files eager attention; afterwards every
    attention config names what it named before, and a failed export restores them too."""
    from hf_ae.export import attention_configs, attention_implementation, export_programs

    model = MODELS["funnel_vae_images"]().eval()
    configs = attention_configs(model)
    assert len(configs) >= 2 and {config._attn_implementation for config in configs} == {"sdpa"}  # model, T5 stacks
    traced = export_programs(model, attention="eager")["encode"].graph_module.code
    assert "scaled_dot_product_attention" not in traced
    assert "scaled_dot_product_attention" in export_programs(model)["encode"].graph_module.code
    assert {config._attn_implementation for config in configs} == {"sdpa"}
    with pytest.raises(RuntimeError, match="stop"), attention_implementation(model, "eager"):
        assert {config._attn_implementation for config in configs} == {"eager"}
        raise RuntimeError("stop")
    assert {config._attn_implementation for config in configs} == {"sdpa"}


def test_models_without_an_image_encoder_are_refused_with_the_reason(tmp_path):
    text = FunnelVaeModel(FunnelVaeConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                          num_latent_tokens=2, latent_dim=4, max_sequence_length=16))
    prior = PatchPriorModel(PatchPriorConfig(num_codes=8, num_patches=4, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match="modality='text'"):
        export_model(text, tmp_path)
    with pytest.raises(ValueError, match="can_encode=False"):
        export_model(prior, tmp_path)
    with pytest.raises(ValueError, match="formats must be"):
        export_model(MODELS["unet_ae"](), tmp_path, formats=["tflite"])
    assert not any(tmp_path.iterdir())  # nothing written for a refused export


def test_export_code_is_what_a_saved_folder_runs_in_a_fresh_process(tmp_path):
    """`python -m hf_ae export` on a saved folder (the installed command's code path)."""
    torch.manual_seed(0)
    model = MODELS["unet_ae"]().eval()
    model.save_pretrained(tmp_path / "model")
    result = run_python(["-m", "hf_ae", "export", "--model", str(tmp_path / "model"), "--formats", "torch"],
                        isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 2 files to" in result.stdout
    assert sorted(p.name for p in (tmp_path / "model" / "exported").iterdir()) == ["decode.pt2", "encode.pt2"]
