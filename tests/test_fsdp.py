"""Engines beyond DDP (issue 20): the Accelerate configs of configs/accelerate/, and every hf_ae model trained sharded
by FSDP2 on two CPU processes, the way Accelerate shards it (tests/fsdp_worker.py: Accelerate's own
fsdp2_prepare_model and FSDP checkpoint functions with the plugins of fsdp.yaml and fsdp_full_state.yaml).

Accelerate 1.16 does not engage its FSDP plugin on a CPU, so `accelerate launch` with these files runs only on GPUs
(not here); what a CPU can check is checked below. The xfail tests are problems found by these checks that need a
change in a model (strict: they fail once fixed, so that the mark is removed)."""

import json
import os
import shlex
import shutil
import warnings
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from subprocess_env import REPO_ROOT, isolated_env, run_torchrun

from hf_ae.training.checkpoints import validate_checkpoint

CONFIG_DIR = REPO_ROOT / "configs" / "accelerate"
WORKER = str(REPO_ROOT / "tests" / "fsdp_worker.py")
MODELS = [
    "patch_vae_kl",
    "patch_vae_vq",
    "patch_vae_vq_learned",
    "funnel_vae_text",
    "funnel_vae_image",
    "unet_ae",
    "unet_ae_group_attention",
    "patch_prior",
]
MODEL_CLASS_NAMES = {"patch_vae": "PatchVaeModel", "funnel_vae": "FunnelVaeModel", "unet_ae": "UNetAeModel",
                     "patch_prior": "PatchPriorModel"}
# Both runs compute each rank's gradients with the same kernels on the same inputs, and averaging two ranks'
# gradients is exact (a/2 + b/2), so FSDP and DDP agree to the last bit on the default, avx2 and avx512 kernels; the
# tolerances only leave room for another reduction order in a later torch. A skipped gradient sync or a lost
# parameter update moves weights by ~lr = 1e-3 per step, far outside them.
LOSS_TOLERANCE = dict(rtol=1e-4, atol=1e-5)
WEIGHT_TOLERANCE = 1e-5
# A resumed run repeats the uninterrupted one's computation exactly.
RESUME_TOLERANCE = 1e-6

LEARNED_CODEBOOK = pytest.mark.xfail(
    strict=True,
    reason="vq_ema=False: the codebook is a parameter, and its initialisation from the first batch and its dead-code "
    "restarts write into the gathered (unsharded) copy during the forward, which FSDP2 frees at reshard: the sharded "
    "codebook keeps its random initialisation while `initialized` is True (the trainer refuses this combination: "
    "test_fsdp_refuses_a_learned_codebook_and_ddp_takes_it)",
)


def mark(name: str, marks: dict) -> pytest.param:
    return pytest.param(name, marks=marks.get(name, ()), id=name)


# ------------------------------------------------------------------------------------------------- configs
def launched(config_file, *extra_args):
    """What `accelerate launch --config_file config_file [extra_args] scripts/train.py` would start, without starting
    it: Accelerate's own launch_command with its two launchers replaced by recorders of the arguments and the
    environment they would give torchrun (the DeepSpeed one also needs no deepspeed installed this way)."""
    import accelerate.commands.launch as launch_module
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    seen = {}

    def multi_gpu_launcher(args):
        seen.update(launcher="multi_gpu", args=args, env=prepare_multi_gpu_env(args))

    def deepspeed_launcher(args):
        _, env = prepare_deepspeed_cmd_env(args)
        seen.update(launcher="deepspeed", args=args, env=env)

    argv = ["--config_file", str(config_file), *extra_args, "scripts/train.py", "--model", "patch_vae"]
    args = launch_module.launch_command_parser().parse_args(argv)
    with (
        mock.patch.object(launch_module, "multi_gpu_launcher", multi_gpu_launcher),
        mock.patch.object(launch_module, "deepspeed_launcher", deepspeed_launcher),
        # the two-machine file names this machine as machine 0: the launcher would check that its port is free here
        mock.patch("accelerate.utils.launch.is_port_in_use", return_value=False),
    ):
        launch_module.launch_command(args)
    return seen


def test_config_files_are_the_documented_set():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == [
        "ddp.yaml", "deepspeed_zero2.yaml", "fsdp.yaml", "fsdp_full_state.yaml", "multi_node.yaml",
    ]


@pytest.mark.parametrize(
    "name, distributed_type",
    [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("fsdp_full_state", "FSDP"), ("deepspeed_zero2", "DEEPSPEED"),
     ("multi_node", "MULTI_GPU")],
)
def test_config_loads_with_accelerates_loader(name, distributed_type):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(CONFIG_DIR / f"{name}.yaml"))  # raises on a key Accelerate does not know
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == distributed_type
    assert not config.use_cpu


@pytest.mark.parametrize("name", ["fsdp", "fsdp_full_state"])
def test_fsdp_configs_give_an_fsdp2_plugin(name):
    """The launcher turns the file into FSDP_* variables; the plugin the training script's Accelerator builds from
    them is FSDP2 with the transformer-based wrap, the file's state dict type, resharding after forward and the rank-0
    loading."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    seen = launched(CONFIG_DIR / f"{name}.yaml")
    assert seen["launcher"] == "multi_gpu" and seen["args"].nproc_per_node == "2"
    fsdp_env = {k: v for k, v in seen["env"].items() if k.startswith("FSDP_")}
    assert seen["env"]["ACCELERATE_USE_FSDP"] == "true"
    with mock.patch.dict(os.environ, fsdp_env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.reshard_after_forward is True
    assert plugin.cpu_ram_efficient_loading is True
    expected = StateDictType.SHARDED_STATE_DICT if name == "fsdp" else StateDictType.FULL_STATE_DICT
    assert plugin.state_dict_type == expected


def test_deepspeed_config_gives_zero_stage_2():
    from accelerate.utils import DeepSpeedPlugin

    seen = launched(CONFIG_DIR / "deepspeed_zero2.yaml")
    assert seen["launcher"] == "deepspeed"
    env = seen["env"]
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    # left to "auto": filled from the script's --gradient_accumulation_steps and by Accelerate
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env and "ACCELERATE_GRADIENT_CLIPPING" not in env
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2
    assert plugin.deepspeed_config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"


@pytest.mark.parametrize("machine_rank", [0, 1])
def test_multi_node_config_starts_two_machines_of_eight(machine_rank):
    extra = [] if machine_rank == 0 else ["--machine_rank", "1"]  # the second machine, as the README says
    seen = launched(CONFIG_DIR / "multi_node.yaml", *extra)
    args = seen["args"]
    assert seen["launcher"] == "multi_gpu"
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", machine_rank)
    assert args.rdzv_endpoint == "10.0.0.1:29500" and args.rdzv_backend == "static"


def readme_launch_commands() -> list[list[str]]:
    """The `accelerate launch` commands of configs/accelerate/README.md, split as the shell would."""
    text = (CONFIG_DIR / "README.md").read_text()
    commands = []
    for block in text.split("```bash\n")[1:]:
        for line in block.split("```")[0].replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["accelerate", "launch"]:
                commands.append(words)
    return commands


def test_readme_commands_name_the_configs_and_parse():
    from hf_ae.training import parse_args

    commands = readme_launch_commands()
    named = {words[words.index("--config_file") + 1] for words in commands}
    assert named == {f"configs/accelerate/{p.name}" for p in CONFIG_DIR.glob("*.yaml")}  # every file, no other
    for words in commands:
        assert (REPO_ROOT / words[words.index("--config_file") + 1]).is_file()
        script = words.index("scripts/train.py")
        launch_options = words[2:script]
        assert launch_options[:2] == ["--config_file", words[words.index("--config_file") + 1]]
        parse_args(words[script + 1:])  # raises on an argument train.py does not take


# ---------------------------------------------------------------------------------------- FSDP2 on 2 CPUs
@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One torchrun launch of tests/fsdp_worker.py for every model -> {name: the worker's report}."""
    tmp_path = tmp_path_factory.mktemp("fsdp")
    # one thread per worker: two workers of 2 threads on a 2-core machine run many times slower
    def launch():
        return run_torchrun(["--nproc_per_node", "2", WORKER, str(tmp_path), *MODELS],
                            env=isolated_env(tmp_path, OMP_NUM_THREADS="1"))

    result = launch()
    if result.returncode != 0 and "Signal 11 (SIGSEGV)" in result.stderr:
        # Seen once in 7 runs (2026-12-03): a worker segfaulted inside torch's gloo transport while gathering a
        # DTensor (full_tensor), and the other rank lost its peer. A crash of the process, not a wrong result: the
        # launch is repeated once, and says so; a second crash, or any other failure, fails.
        warnings.warn(f"the FSDP workers' first launch segfaulted; launched again:\n{result.stderr[-2000:]}",
                      stacklevel=2)
        result = launch()
    assert result.returncode == 0, result.stderr[-6000:]
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in MODELS}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_model_is_sharded_as_accelerate_wraps_it(reports, name):
    """Every parameter a DTensor, most of them split (each rank holds about half of the model), every
    `_no_split_modules` layer its own FSDP unit under the root one; rank 1, built from other weights, starts from
    rank 0's (fsdp_cpu_ram_efficient_loading broadcasts them)."""
    report = reports[name]
    sharding = report["sharding"]
    assert sharding["dtensor_parameters"] == sharding["parameters"] > 0
    assert sharding["split_parameters"] >= sharding["parameters"] // 2
    assert sharding["local_numel"] < 0.6 * sharding["full_numel"]
    assert sharding["root_is_fsdp_unit"]
    assert sharding["no_split_layers"] >= 2 and sharding["no_split_layers_sharded"] == sharding["no_split_layers"]
    assert report["initial_vs_rank0"] == {"parameters": [0.0, 0.0], "buffers": [0.0, 0.0]}
    if name == "patch_prior":  # the autoencoder stays outside the prior's module tree, so outside FSDP
        assert report["autoencoder_unsharded"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_accelerate_prepares_model_as_it_is(reports, name):
    """fsdp2_prepare_model ran without the worker's stand-in get_input_embeddings: every model answers it (None for
    the image models, the code embedding for the prior), where transformers' default raised NotImplementedError."""
    assert reports[name]["get_input_embeddings_error"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", [mark(name, {"patch_vae_vq_learned": LEARNED_CODEBOOK}) for name in MODELS])
def test_sharded_training_matches_ddp(reports, name):
    """4 AdamW steps, each rank on its half of every global batch: the losses of each rank and the weights equal those
    of the same training replicated by DDP. Buffers are compared on rank 0 (DDP replaces the others' with rank 0's
    before every forward; FSDP leaves each rank its own): for every model but the BatchNorm UNet they are also the
    same on both ranks (the VQ codebook statistics are all-reduced by the model)."""
    report = reports[name]
    fsdp, ddp = np.array(report["fsdp_losses"]), np.array(report["ddp_losses"])
    assert fsdp.shape == (2, 4) and np.isfinite(fsdp).all()
    np.testing.assert_allclose(fsdp, ddp, **LOSS_TOLERANCE)
    assert max(report["fsdp_vs_ddp"]["parameters"]) <= WEIGHT_TOLERANCE
    assert report["fsdp_vs_ddp"]["buffers"][0] <= WEIGHT_TOLERANCE
    if name != "unet_ae":  # norm="batch": each rank's running statistics are its own under FSDP
        assert report["buffers_rank0_vs_rank1"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_gathered_model_round_trips_through_save_pretrained(reports, name):
    """The full state dict gathered from the shards (what accelerator.get_state_dict returns) holds the trained
    weights; saved by save_pretrained from an unsharded model of the model's class, it names the model's own remote
    code, and from_pretrained gives the same weights and the sharded model's outputs (and, for the prior, samples)."""
    report = reports[name]
    assert report["gathered_vs_local"] == 0.0
    auto_model = report["saved"]["auto_map"]["AutoModel"]
    module, class_name = auto_model.split(".")
    assert class_name == MODEL_CLASS_NAMES[name.split("_")[0] + "_" + name.split("_")[1]]
    assert module.startswith("modeling_") and f"{module}.py" in report["saved"]["files"]
    assert "model.safetensors" in report["saved"]["files"]
    assert not any(f.startswith("_fsdp") for f in report["saved"]["files"])
    assert report["reloaded_vs_gathered"] == 0.0
    assert report["reloaded_outputs_vs_sharded"] <= RESUME_TOLERANCE
    if name == "patch_prior":
        assert report["reloaded_samples_vs_sharded"] <= RESUME_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sharded", "full"])
@pytest.mark.parametrize("name", MODELS)
def test_resume_is_exact(reports, name, kind):
    """A fresh sharded model and optimiser (other weights) load the checkpoint written after step 2 by Accelerate's
    FSDP functions (SHARDED_STATE_DICT from fsdp.yaml, FULL_STATE_DICT from fsdp_full_state.yaml) and train steps 2
    and 3: the same losses, parameters and buffers as the uninterrupted run on both ranks."""
    report = reports[name]
    resumed = np.array(report[f"resumed_{kind}_losses"])
    np.testing.assert_allclose(resumed, np.array(report["fsdp_losses"])[:, 2:], rtol=0, atol=RESUME_TOLERANCE)
    differences = report[f"resumed_{kind}_vs_uninterrupted"]
    assert max(differences["parameters"]) <= RESUME_TOLERANCE
    assert max(differences["buffers"]) <= RESUME_TOLERANCE


@pytest.mark.slow
def test_batchnorm_statistics_resume_on_both_ranks_from_a_sharded_checkpoint(reports):
    """FSDP never syncs buffers, so each rank kept its own BatchNorm running statistics and a SHARDED_STATE_DICT
    checkpoint (torch.distributed.checkpoint) stored one copy of a replicated tensor, rank 1's: after resuming,
    rank 0 held rank 1's statistics. The loop broadcasts rank 0's buffers before saving under FSDP (as DDP does
    before every forward), so both ranks resume with the uninterrupted run's."""
    differences = reports["unet_ae"]["resumed_sharded_vs_uninterrupted"]["buffers"]
    assert max(differences) <= RESUME_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sharded", "full"])
def test_fsdp_checkpoints_pass_the_resume_check(reports, kind, tmp_path):
    """The folders Accelerate's FSDP functions wrote (with the scheduler and training state that save_state and the
    loop add) pass validate_checkpoint, which used to ask for model.safetensors and optimizer.bin; without the
    optimizer's state they do not."""
    folder = tmp_path / kind
    shutil.copytree(reports["patch_vae_kl"]["checkpoint_dirs"][kind], folder)
    (folder / "scheduler.bin").write_bytes(b"")
    (folder / "training_state.json").write_text(json.dumps({"global_step": 2}))
    validate_checkpoint(folder)
    optimizer_state = next(p for p in folder.iterdir() if p.name.startswith("optimizer"))
    shutil.rmtree(optimizer_state) if optimizer_state.is_dir() else optimizer_state.unlink()
    with pytest.raises(ValueError, match="missing .*the optimizer's state"):
        validate_checkpoint(folder)


def test_a_deepspeed_checkpoint_layout_passes_the_resume_check(tmp_path):
    """DeepSpeed's save_state writes one folder (pytorch_model/) with the model and optimizer states."""
    (tmp_path / "pytorch_model").mkdir()
    (tmp_path / "scheduler.bin").write_bytes(b"")
    (tmp_path / "training_state.json").write_text(json.dumps({"global_step": 2}))
    validate_checkpoint(tmp_path)
    (tmp_path / "pytorch_model").rmdir()
    with pytest.raises(ValueError, match="missing .*the model's state: one of model.safetensors"):
        validate_checkpoint(tmp_path)


class EngineStandIn:
    """What whole_model and configure_engine read of an Accelerator running FSDP or DeepSpeed (which a CPU cannot
    start: see the module docstring)."""

    def __init__(self, distributed_type, is_main_process=True, deepspeed_config=None):
        self.distributed_type = distributed_type
        self.is_main_process = is_main_process
        self.gathered = 0
        plugin = None
        if deepspeed_config is not None:
            from accelerate.utils import DeepSpeedPlugin

            plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config)
        self.state = SimpleNamespace(deepspeed_plugin=plugin)

    def get_state_dict(self, model):
        self.gathered += 1
        return {k: v.clone() for k, v in model.state_dict().items()}


def tiny_prior_and_autoencoder():
    from hf_ae import PatchPriorConfig, PatchPriorModel, PatchVaeConfig, PatchVaeModel

    torch.manual_seed(0)
    autoencoder = PatchVaeModel(PatchVaeConfig(image_size=8, num_channels=1, patch_size=4, hidden_size=16,
                                               num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                               bottleneck="vq", codebook_size=8))
    prior = PatchPriorModel(PatchPriorConfig(num_codes=8, num_patches=4, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
    return prior, autoencoder


def test_the_saved_model_is_a_whole_copy_under_fsdp_and_deepspeed():
    """Under FSDP or DeepSpeed the trainer saves and probes a whole model built on the main process from
    accelerator.get_state_dict (which every process calls: it gathers), with what the data kind attached (the prior's
    autoencoder); the other processes get None; without an engine it is the trained model itself."""
    from accelerate import DistributedType

    from hf_ae.training.trainer import whole_model

    prior, autoencoder = tiny_prior_and_autoencoder()
    prior.train()
    data = SimpleNamespace(attach=lambda model: model.set_autoencoder(autoencoder))
    for engine in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        accelerator = EngineStandIn(engine)
        whole = whole_model(accelerator, prior, prior, data)
        assert whole is not prior and not whole.training and accelerator.gathered == 1
        assert whole.autoencoder is autoencoder
        for name, tensor in prior.state_dict().items():
            assert torch.equal(whole.state_dict()[name], tensor), name
        other_rank = EngineStandIn(engine, is_main_process=False)
        assert whole_model(other_rank, prior, prior, data) is None and other_rank.gathered == 1
    accelerator = EngineStandIn(DistributedType.MULTI_GPU)
    assert whole_model(accelerator, prior, prior, data) is prior and accelerator.gathered == 0
    assert not prior.training


def test_deepspeed_takes_the_batch_size_from_the_arguments():
    """configs/accelerate/deepspeed_zero2.yaml leaves train_micro_batch_size_per_gpu to "auto", which Accelerate fills
    only from loaders prepared in the same call as the model; the trainer prepares them apart, so it sets it."""
    from accelerate import DistributedType

    from hf_ae.training.arguments import TrainArguments
    from hf_ae.training.trainer import configure_engine

    _, model = tiny_prior_and_autoencoder()
    train_args = TrainArguments(per_device_train_batch_size=12)
    config = {"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2}}
    accelerator = EngineStandIn(DistributedType.DEEPSPEED, deepspeed_config=config)
    configure_engine(accelerator, train_args, model)
    assert accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 12
    fixed = EngineStandIn(DistributedType.DEEPSPEED, deepspeed_config={**config, "train_micro_batch_size_per_gpu": 3})
    configure_engine(fixed, train_args, model)
    assert fixed.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 3
    configure_engine(EngineStandIn(DistributedType.FSDP), train_args, model)  # nothing to set


def test_fsdp_refuses_a_learned_codebook_and_ddp_takes_it():
    """The learned codebook's first-batch initialisation and restarts are lost under FSDP2 (the strict xfail of
    test_sharded_training_matches_ddp): the trainer refuses it before preparing anything, naming what to use."""
    from accelerate import DistributedType

    from hf_ae import PatchVaeConfig, PatchVaeModel
    from hf_ae.training.arguments import TrainArguments
    from hf_ae.training.trainer import configure_engine

    learned = PatchVaeModel(PatchVaeConfig(image_size=8, num_channels=1, patch_size=4, hidden_size=16,
                                           num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                           bottleneck="vq", codebook_size=8, vq_ema=False))
    with pytest.raises(ValueError, match=r"FSDP cannot train this model: a learned codebook \(vq_ema=False\).*vq_ema=True"):
        configure_engine(EngineStandIn(DistributedType.FSDP), TrainArguments(), learned)
    configure_engine(EngineStandIn(DistributedType.MULTI_GPU), TrainArguments(), learned)
