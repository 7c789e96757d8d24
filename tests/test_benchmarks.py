"""The benchmark suite's measuring pieces (benchmarks/): FLOP counting, peak memory, matched peers, a timed
job and the rendered report. Timings themselves live in `python -m benchmarks.run`, never in tests."""

import json
import shlex

import pytest
import torch
import torch.nn.functional as F
from subprocess_env import REPO_ROOT, isolated_env, run_python
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import funnel_vae_gpu_sweep, funnel_vae_python_lines, report, workloads
from benchmarks import run as benchmarks_run
from benchmarks.run import job_generation, job_train_step
from benchmarks.speed import EXTRA_FLOP_FORMULAS, count_flops, matmul_rate
from hf_ae import FunnelVaeConfig
from hf_ae.training import parse_args
from hf_ae.training.arguments import parse_config_overrides

CPU = torch.device("cpu")


def test_cpu_sdpa_flops_are_counted_like_the_same_attention_written_out():
    """torch's counter misses the CPU SDPA kernel. With our formulas the forward counts what the eager attention
    (whose matmuls torch counts) counts; the backward counts five products, not four, because the fused backward
    recomputes QK^T (torch counts its CUDA kernels the same way)."""
    q, k, v = (torch.randn(2, 4, 32, 16, requires_grad=True) for _ in range(3))

    def eager():
        weights = (q @ k.transpose(-1, -2) / 4.0).softmax(-1)
        return (weights @ v).sum()

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v).sum()

    forward_only = {}
    for name, attention in (("eager", eager), ("sdpa", sdpa)):
        with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
            attention()
        forward_only[name] = counter.get_total_flops()
    assert forward_only["sdpa"] == forward_only["eager"] == 2 * (2 * 2 * 4 * 32 * 32 * 16)
    assert count_flops(eager) == 3 * forward_only["eager"]
    assert count_flops(sdpa) == forward_only["sdpa"] * 7 // 2


def test_linear_training_step_flops_are_three_forward_matmuls():
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(10, 64)
    assert count_flops(lambda: layer(x).sum()) == 2 * 10 * 64 * 32 * 2  # forward + weight gradient (x needs none)
    x.requires_grad_(True)
    assert count_flops(lambda: layer(x).sum()) == 2 * 10 * 64 * 32 * 3


def test_matmul_rate_is_a_plausible_rate():
    rate = matmul_rate(CPU, size=256, min_seconds=0.2)
    assert 1e8 < rate < 1e14  # FLOP/s: more than an old phone, less than a rack


def test_peak_memory_sees_a_block_allocation_after_a_higher_earlier_peak(tmp_path):
    """The block's own peak, whatever the process reached before (a 1 GiB tensor here, or the peak a subprocess
    inherits from a big parent, which made this test's verdict depend on the process that started it)."""
    code = (
        "import torch\n"
        "from benchmarks.speed import PeakMemory\n"
        "earlier = torch.ones(2**28)\n"  # 1 GiB, freed before the block
        "del earlier\n"
        "with PeakMemory(torch.device('cpu')) as m:\n"
        "    x = torch.ones(2**27)\n"  # 512 MiB (well above the import peak), written so the pages are resident
        "    del x\n"
        "print(m.peak_bytes / 2**20, m.reliable)\n"
    )
    result = run_python(["-c", code], cwd=REPO_ROOT, env=isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    mebibytes, reliable = result.stdout.split()
    assert reliable == "True"
    assert 505 <= float(mebibytes) <= 580


@pytest.mark.parametrize(
    "ours, peers, data",
    [
        ("patch_vae", ["autoencoder_kl"], {"kind": "photos", "image_size": 32, "batch_size": 2, "num_batches": 1}),
        ("unet_ae", ["unet_ae_peer_kl", "unet2d"], {"kind": "photos", "image_size": 32, "batch_size": 2,
                                                    "num_batches": 1}),
    ],
)
def test_image_peers_are_matched_in_size_and_see_the_same_batches(ours, peers, data):
    ours_workload = workloads.build(ours, data, CPU)
    for peer in peers:
        peer_workload = workloads.build(peer, data, CPU)
        assert abs(peer_workload.num_parameters / ours_workload.num_parameters - 1) < 0.1
        assert torch.equal(peer_workload.batches[0]["pixel_values"], ours_workload.batches[0]["pixel_values"])
        assert torch.isfinite(peer_workload.loss(peer_workload.model, peer_workload.batches[0]))


def test_text_peer_has_the_same_size_and_batches_without_padding_loss():
    data = {"kind": "python-lines", "batch_size": 4, "num_batches": 2}
    funnel, t5 = workloads.build("funnel_vae", data, CPU), workloads.build("t5_autoencoder", data, CPU)
    assert abs(t5.num_parameters / funnel.num_parameters - 1) < 0.05
    assert funnel.tokens_per_batch == t5.tokens_per_batch
    batch = funnel.batches[0]
    assert torch.equal(batch["labels"] == -100, batch["attention_mask"] == 0)
    long = workloads.build("funnel_vae", {"kind": "long-text", "length": 96, "batch_size": 2}, CPU)
    assert long.batches[0]["input_ids"].shape == (2, 96)
    assert (long.batches[0]["input_ids"][:, -1] == 1).all()  # each row ends in the end-of-sequence token
    assert torch.isfinite(long.loss(long.model, long.batches[0]))


def test_train_step_job_reports_consistent_figures():
    spec = {"model": "patch_vae", "device": "cpu", "options": {"hidden_size": 64, "num_layers": 1},
            "data": {"kind": "photos", "image_size": 32, "batch_size": 4, "num_batches": 2},
            "warmup": 1, "min_steps": 2, "max_steps": 2, "seconds": 0.0}
    result = job_train_step(spec)
    assert result["steps_timed"] == 2
    assert result["samples_per_second"] == pytest.approx(4 / result["seconds_per_step"])
    assert result["flops_per_second"] == pytest.approx(result["flops_per_step"] / result["seconds_per_step"])
    workload = workloads.build("patch_vae", spec["data"], CPU, **spec["options"])
    assert result["flops_per_step"] == count_flops(lambda: workload.loss(workload.model, workload.batches[0]))


def test_generation_job_decodes_the_same_texts_with_and_without_the_cache():
    result = job_generation({"device": "cpu", "num_texts": 2, "new_tokens": 6})
    assert result["same_texts"]
    assert result["with_cache"]["tokens"] == result["without_cache"]["tokens"] == [2, 6]


def _record(ours_rate, peer_rate):
    row = {"name": "PatchVae", "description": "d", "parameters": 1e6, "samples_per_second": ours_rate,
           "flops_per_step": 1e9, "flops_per_second": 1e9 * ours_rate, "peak_memory_bytes": 2**20}
    peer = {**row, "name": "diffusers AutoencoderKL", "samples_per_second": peer_rate, "flops_per_second": 1e9 * peer_rate}
    return {"machine": "test machine", "device": "cpu", "precision": "fp32", "compile": False, "quick": True,
            "date": "today", "command": "python -m benchmarks.run", "wall_seconds": 60,
            "results": {"matmul": {"flops_per_second": {"fp32": 1e11}, "threads": 2},
                        "speed": [{"data": {"kind": "photos", "image_size": 32, "batch_size": 64}, "goal": True,
                                   "ours": row, "peers": [peer]}]}}


@pytest.mark.parametrize("ours_rate, peer_rate, verdict", [(30.0, 20.0, "1.50× samples/s (goal ≥ 1.0×): met"),
                                                            (10.0, 20.0, "0.50× samples/s (goal ≥ 1.0×): NOT met")])
def test_report_states_ratios_and_goals(tmp_path, ours_rate, peer_rate, verdict):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "run_cpu.json").write_text(json.dumps(_record(ours_rate, peer_rate)))
    report.render_results(results_dir, tmp_path / "RESULTS.md")
    text = (tmp_path / "RESULTS.md").read_text()
    assert verdict in text
    assert f"**{ours_rate / peer_rate:.2f}×**" in text
    assert f"{100 * ours_rate * 1e9 / 1e11:.1f}%" in text  # MFU against the measured matmul rate


def test_run_rejects_unknown_sections(capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmarks_run.main(["--sections", "speed,nonsense"])
    assert exit_info.value.code == 2
    assert "unknown sections ['nonsense']" in capsys.readouterr().err


def test_every_funnel_gpu_sweep_configuration_builds_a_model_config_and_parses_its_train_arguments():
    """A typo in a sweep configuration would cost a GPU lease before it showed: each one's overrides must build a
    FunnelVaeConfig and its train.py arguments must parse, as the benchmark combines them."""
    for name, (overrides, train_args, batch_size, learning_rate) in funnel_vae_gpu_sweep.CONFIGS.items():
        combined = funnel_vae_python_lines.MODEL_OVERRIDES.format(warmup=100) + (f",{overrides}" if overrides else "")
        fields = parse_config_overrides(combined)
        assert set(fields) <= set(FunnelVaeConfig().to_dict()), (name, set(fields) - set(FunnelVaeConfig().to_dict()))
        config = FunnelVaeConfig(vocab_size=259, **fields)  # also runs the config's own checks
        if "decoder_aligned_latents=False" in overrides:
            assert config.decoder_aligned_latents is False, name
        _, _, parsed = parse_args(["--model", "funnel_vae", "--dataset", "python-lines",
                                   "--per_device_train_batch_size", str(batch_size),
                                   "--learning_rate", str(learning_rate), *shlex.split(train_args)])
        if "--input_token_deletion" in train_args:
            assert parsed.input_token_deletion == 0.1, name
            assert parsed.input_token_deletion_share == (0.5 if "half_del" in name else 1.0), name
