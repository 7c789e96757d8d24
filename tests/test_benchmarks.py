"""The benchmark suite's measuring pieces (benchmarks/): FLOP counting, peak memory, matched peers, a timed
job and the rendered report. Timings themselves live in `python -m benchmarks.run`, never in tests."""

import json
import shlex

import pytest
import torch
import torch.nn.functional as F
from subprocess_env import REPO_ROOT, isolated_env, run_python
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import funnel_vae_gpu_sweep, funnel_vae_python_lines, report, speed, workloads
from benchmarks import run as benchmarks_run
from benchmarks.run import job_generation, job_train_step
from benchmarks.speed import EXTRA_FLOP_FORMULAS, count_flops, matmul_rate
from hf_ae import FunnelVaeConfig, FunnelVaeModel
from hf_ae.training import parse_args
from hf_ae.training.arguments import parse_config_overrides

CPU = torch.device("cpu")


class FakeClock:
    """Stands in for the `time` module of benchmarks.speed: perf_counter advances `tick` seconds at every call, so
    a timed loop's figures are exact (ticks of a power of two keep the arithmetic exact too)."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


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


def test_matmul_rate_is_the_products_flops_over_the_clocked_time(monkeypatch):
    monkeypatch.setattr(speed, "time", FakeClock(0.125))
    # Each of the three rounds reads the clock at its start and after every 4 products until min_seconds / 3 =
    # 0.25 s have passed: 0.125 s after 4 products, 0.25 s after 8. 8 products of 2 * 64^3 FLOPs in 0.25 s.
    assert matmul_rate(CPU, size=64, min_seconds=0.75) == 8 * 524_288 / 0.25 == 16_777_216


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


# FLOPs of one training step of PatchVae (KL) with hidden 64, one encoder and one decoder layer (1 head of 64, MLP
# 256, latent_dim 4) on 4 RGB 32x32 images in 4x4 patches: T = 4 * 64 = 256 tokens of 48 pixel values.
#   linear layers, in * out: patch embedding 48*64 = 3072; a ViT layer q, k, v, out 4*64*64 + MLP 2*64*256 = 49152;
#   posterior 64*8 = 512; latent projection 4*64 = 256; decoder layer 49152; patch head 64*48 = 3072 -> 105216
#   forward 2 * 256 * 105216 = 53_870_592; backward twice that less the patch embedding's input gradient (the
#   pixels need none): 2 * 53_870_592 - 2 * 256 * 3072 = 106_168_320
#   attention, per layer: QK^T and AV, 2 * (2 * 4 images * 1 head * 64 * 64 * 64) = 4_194_304 forward, 2.5x that
#   backward (five products: the fused backward recomputes QK^T); two layers: 8_388_608 + 20_971_520
PATCH_VAE_STEP_FLOPS = 53_870_592 + 106_168_320 + 8_388_608 + 20_971_520  # 189_399_040


def test_train_step_job_reports_its_figures_from_the_clock_and_the_flop_count(monkeypatch):
    spec = {"model": "patch_vae", "device": "cpu", "options": {"hidden_size": 64, "num_layers": 1},
            "data": {"kind": "photos", "image_size": 32, "batch_size": 4, "num_batches": 2},
            "warmup": 1, "min_steps": 2, "max_steps": 2, "seconds": 0.0}
    monkeypatch.setattr(speed, "time", FakeClock(0.25))
    result = job_train_step(spec)
    # the clock is read at the start, after the 2nd step (min_steps: 0.25 s >= 0 s, stop) and at the end:
    # 0.5 s for 2 steps
    assert result["steps_timed"] == 2 and result["seconds_per_step"] == 0.25
    assert result["samples_per_second"] == 16.0  # 4 images per 0.25 s
    assert result["flops_per_step"] == PATCH_VAE_STEP_FLOPS == 189_399_040
    assert result["flops_per_second"] == 4 * 189_399_040


def test_generation_job_decodes_the_same_texts_with_and_without_the_cache(monkeypatch):
    """The cache must not change the logits; equal greedy tokens follow where no step is a near tie."""
    runs = []  # (use_cache, tokens, logits of every step (B, steps, vocab))
    generate = FunnelVaeModel.generate

    def recording_generate(self, latents, max_new_tokens=None, use_cache=True):
        steps = []
        hook = self.lm_head.register_forward_hook(lambda module, inputs, logits: steps.append(logits.detach().float()))
        try:
            tokens = generate(self, latents, max_new_tokens=max_new_tokens, use_cache=use_cache)
        finally:
            hook.remove()
        runs.append((use_cache, tokens, torch.stack(steps, 1)))
        return tokens

    monkeypatch.setattr(FunnelVaeModel, "generate", recording_generate)
    result = job_generation({"device": "cpu", "num_texts": 2, "new_tokens": 6})
    assert [(use_cache, tuple(logits.shape)) for use_cache, _, logits in runs] == [
        (True, (2, 4, 259)), (True, (2, 6, 259)), (False, (2, 4, 259)), (False, (2, 6, 259))]  # warm-up, timed
    (_, cached_tokens, cached), (_, uncached_tokens, uncached) = runs[1], runs[3]
    torch.testing.assert_close(uncached, cached, rtol=0, atol=1e-5)
    # the best logit leads the second by more than twice the tolerance at every step: the same argmax either way
    best_two = cached.topk(2, dim=-1).values
    assert (best_two[..., 0] - best_two[..., 1]).min() > 1e-4
    assert torch.equal(cached_tokens, cached.argmax(-1)) and torch.equal(uncached_tokens, cached_tokens)
    assert result["same_texts"] is True
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


@pytest.mark.parametrize("ours_rate, peer_rate, verdict, ratio, mfu", [
    (30.0, 20.0, "1.50× samples/s (goal ≥ 1.0×): met", "**1.50×**", "30.0%"),  # 30 x 1e9 FLOP/s of 1e11
    (10.0, 20.0, "0.50× samples/s (goal ≥ 1.0×): NOT met", "**0.50×**", "10.0%"),
])
def test_report_states_ratios_and_goals(tmp_path, ours_rate, peer_rate, verdict, ratio, mfu):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "run_cpu.json").write_text(json.dumps(_record(ours_rate, peer_rate)))
    report.render_results(results_dir, tmp_path / "RESULTS.md")
    text = (tmp_path / "RESULTS.md").read_text()
    assert verdict in text
    assert ratio in text
    assert mfu in text  # MFU against the measured matmul rate


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
