"""Run by tests/test_fsdp.py under torchrun (2 CPU processes, gloo): every hf_ae model trained sharded by FSDP2 the way
Accelerate shards it, against the same training replicated by DDP. One launch serves every model: starting two
processes and their gloo group costs more than the training.

Accelerate 1.16 does not engage its FSDP plugin on a CPU (checked for issue 20), so this script does
what `accelerator.prepare` / `save_state` / `load_state` do with the plugin of `configs/accelerate/fsdp.yaml`, with
Accelerate's own code:

* the plugin: `accelerate launch --config_file configs/accelerate/fsdp.yaml` turns the file into FSDP_* environment
  variables (Accelerate's `_validate_launch_command` and `prepare_multi_gpu_env`), from which the training script's
  `FullyShardedDataParallelPlugin()` builds itself; the same here, in-process;
* the sharding: `accelerate.utils.fsdp_utils.fsdp2_prepare_model` (each `_no_split_modules` layer its own FSDP unit,
  then the root; with `cpu_ram_efficient_loading` rank 0's weights are broadcast to the others), called with a
  stand-in for the `Accelerator` that holds the few attributes it reads;
* checkpoints: `save_fsdp_model` / `save_fsdp_optimizer` / `load_fsdp_model` / `load_fsdp_optimizer` (what
  `accelerator.save_state` / `load_state` call under FSDP), with the plugin of `fsdp.yaml` (SHARDED_STATE_DICT:
  torch.distributed.checkpoint folders) and of `fsdp_full_state.yaml` (FULL_STATE_DICT: one file from rank 0);
* the final model: `get_model_state_dict` with the options of `accelerator.get_state_dict` under FSDP2 (the full
  state dict on rank 0, on the CPU), then `save_pretrained` on rank 0.

The reference is the same data-parallel training unsharded: DDP replicas of the same initial weights, each rank on
its half of every global batch with its own generator. That is the "same global math" whatever a model computes
across its batch, which a single process on the whole batch would not reproduce: the MMD and BatchNorm statistics
of each rank's half, a token-weighted mean per rank, each rank's posterior noise, and the VQ codebook statistics
that the model all-reduces itself (`vq_sync_codebook`) with restart vectors drawn from rank 0's half.

Rank 0 writes `<name>.json` per model into the folder argv[1]: what was sharded, the losses of every run, the largest
differences between runs (per rank, parameters and buffers apart) and the checks of the saved model. The test reads
the numbers and asserts.

argv: OUTPUT_DIR [MODEL_NAME ...]   (default: every model of `model_specs`)
"""

import contextlib
import functools
import inspect
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import (
    fsdp2_prepare_model,
    load_fsdp_model,
    load_fsdp_optimizer,
    save_fsdp_model,
    save_fsdp_optimizer,
)
from accelerate.utils.launch import prepare_multi_gpu_env
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from transformers import ByT5Tokenizer

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
from hf_ae.training.trainer import broadcast_buffers

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
# checkpoint kind -> the config that writes it (fsdp_state_dict_type SHARDED_STATE_DICT / FULL_STATE_DICT)
CONFIG_FILES = {"sharded": "fsdp.yaml", "full": "fsdp_full_state.yaml"}
STEPS, CHECKPOINT_STEP = 4, 2  # train 4 steps; checkpoint after 2, resume from there
GLOBAL_BATCH = 8  # 4 per rank
LEARNING_RATE = 1e-3

# The tiny configurations of the model test modules.
TINY_PATCH = dict(image_size=8, num_channels=1, patch_size=4, hidden_size=16, num_hidden_layers=1,
                  decoder_num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, latent_dim=4)
TINY_FUNNEL = dict(hidden_size=16, num_attention_heads=2, decoder_num_attention_heads=2, intermediate_size=32,
                   block_sizes=[1, 1], latent_dim=4, decoder_num_hidden_layers=1)
TINY_UNET = dict(image_size=8, num_channels=1, block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=8)
TINY_PRIOR = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
TEXTS = ["x = 1", "return foo(bar)", "import os", "def f(a, b):", "pass", "y = [i for i in z]", "del q", "a += 1"]


# ------------------------------------------------------------------------------------------- models and data
def image_batch(step: int, size: int = 8) -> dict:
    """The global batch of `step`: GLOBAL_BATCH images in [0, 1], the same on every rank."""
    generator = torch.Generator().manual_seed(100 + step)
    return {"pixel_values": torch.rand(GLOBAL_BATCH, 1, size, size, generator=generator)}


def text_batch_maker():
    tokenizer = ByT5Tokenizer(extra_ids=0)

    def text_batch(step: int) -> dict:
        """The global batch of `step`: the texts rotated by `step`, right-padded to the longest."""
        texts = TEXTS[step % len(TEXTS):] + TEXTS[: step % len(TEXTS)]
        return dict(tokenizer(texts, padding=True, return_tensors="pt"))

    return text_batch


@functools.lru_cache(maxsize=1)
def prior_autoencoder() -> PatchVaeModel:
    """A vq PatchVae, built as tests/test_patch_prior.py builds one: its codes are the prior's data and it decodes the
    prior's samples. It joins the prior after sharding, as the trainer attaches it after training: a frozen
    submodule that is never part of the prior's weights, and stays unsharded."""
    torch.manual_seed(1)
    return PatchVaeModel(PatchVaeConfig(**{**TINY_PATCH, "image_size": 16, "bottleneck": "vq", "codebook_size": 12})).eval()


def model_specs() -> dict:
    """name -> (build() -> model, batch(step) -> the global batch: tensors split along dim 0 between the ranks)."""
    autoencoder = prior_autoencoder()

    @torch.no_grad()
    def code_batch(step: int) -> dict:
        return {"input_ids": autoencoder.encode(image_batch(step, size=16)["pixel_values"]).codes}

    def prior():
        return PatchPriorModel(PatchPriorConfig(num_codes=12, num_patches=16, **TINY_PRIOR))

    def patch_vae(**options):
        return lambda: PatchVaeModel(PatchVaeConfig(**{**TINY_PATCH, **options}))

    def funnel(**options):
        return lambda: FunnelVaeModel(FunnelVaeConfig(**{**TINY_FUNNEL, **options}))

    def unet(**options):
        return lambda: UNetAeModel(UNetAeConfig(**{**TINY_UNET, **options}))

    return {
        "patch_vae_kl": (patch_vae(bottleneck="kl"), image_batch),
        # the EMA codebook (buffers): initialised from the first batch, dead codes restarted, statistics all-reduced
        "patch_vae_vq": (patch_vae(bottleneck="vq", codebook_size=8), image_batch),
        # the learned codebook (a parameter), with the same initialisation and restarts
        "patch_vae_vq_learned": (patch_vae(bottleneck="vq", codebook_size=8, vq_ema=False), image_batch),
        "funnel_vae_text": (funnel(num_latent_tokens=4, max_sequence_length=32), text_batch_maker()),
        "funnel_vae_image": (funnel(modality="image", image_size=8, patch_size=2, num_latent_tokens=None,
                                    bottleneck="kl"), image_batch),
        "unet_ae": (unet(), image_batch),  # norm="batch", the default
        "unet_ae_group_attention": (unet(norm="group", attention="dot", attention_resolutions=[4], mlp_bottleneck=True,
                                         latent_dim=6, mlp_hidden_dim=16), image_batch),
        "patch_prior": (prior, code_batch),
    }


def build(build_fn, seed: int):
    torch.manual_seed(seed)
    return build_fn()


def rank_half(batch: dict) -> dict:
    """This rank's half of a global batch."""
    return {k: v.chunk(dist.get_world_size())[dist.get_rank()] for k, v in batch.items()}


def step_generator(step: int) -> torch.Generator:
    """The randomness of `step` on this rank (posterior noise, MMD prior samples, VQ restart rows)."""
    return torch.Generator().manual_seed(1000 * step + dist.get_rank())


# ------------------------------------------------------------------------------------------ Accelerate's FSDP
def fsdp_environment(path: Path) -> dict[str, str]:
    """The FSDP_* variables that `accelerate launch --config_file path` gives the training script."""
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    _validate_launch_command(args)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith("FSDP_")}


def fsdp_plugin(environment: dict[str, str]) -> FullyShardedDataParallelPlugin:
    """The plugin an Accelerator builds from those variables. A fresh one for every model: a plugin keeps the layer
    classes to wrap of the first model it prepared (`set_auto_wrap_policy`)."""
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        return FullyShardedDataParallelPlugin()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class AcceleratorStandIn:
    """The attributes of an FSDP2 `Accelerator` that accelerate.utils.fsdp_utils reads (its prepare and checkpoint
    helpers), for a CPU, where Accelerate itself does not use its FSDP plugin."""

    def __init__(self, plugin: FullyShardedDataParallelPlugin):
        self.state = SimpleNamespace(fsdp_plugin=plugin)
        self.torch_device_mesh = None
        self.parallelism_config = None
        self.mixed_precision = "no"
        self.device = torch.device("cpu")
        self.process_index = dist.get_rank()
        self.num_processes = dist.get_world_size()
        self.is_main_process = self.process_index == 0
        self.is_fsdp2 = True

    def wait_for_everyone(self):
        dist.barrier()


@contextlib.contextmanager
def input_embeddings_fallback(model):
    """fsdp2_prepare_model calls `model.get_input_embeddings()`, which raises NotImplementedError on a PreTrainedModel
    that neither overrides it nor has an `embed_tokens`. Yields that error (None when the call works) and meanwhile
    lets the instance answer None (nothing to shard apart), so that the rest of the preparation can be checked."""
    try:
        model.get_input_embeddings()
        error = None
    except NotImplementedError as caught:
        error = f"NotImplementedError: {caught}"
        model.get_input_embeddings = lambda: None  # an instance attribute, removed below
    try:
        yield error
    finally:
        model.__dict__.pop("get_input_embeddings", None)


def shard(model, environment: dict):
    """fsdp2_prepare_model as `accelerator.prepare(model)` calls it -> (sharded model, get_input_embeddings error)."""
    with input_embeddings_fallback(model) as error:
        model = fsdp2_prepare_model(AcceleratorStandIn(fsdp_plugin(environment)), model)
    return model, error


def save_checkpoint(model, optimizer, environment: dict, folder: Path) -> None:
    plugin = fsdp_plugin(environment)
    accelerator = AcceleratorStandIn(plugin)
    save_fsdp_model(plugin, accelerator, model, str(folder))
    save_fsdp_optimizer(plugin, accelerator, optimizer, model, str(folder))


def load_checkpoint(model, optimizer, environment: dict, folder: Path) -> None:
    plugin = fsdp_plugin(environment)
    accelerator = AcceleratorStandIn(plugin)
    load_fsdp_model(plugin, accelerator, model, str(folder))
    load_fsdp_optimizer(plugin, accelerator, optimizer, model, str(folder))


def full_state_dict(model) -> dict:
    """`accelerator.get_state_dict(model)` under FSDP2: the whole state dict on rank 0 (CPU), {} on the others. A
    collective: every rank calls it."""
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


# --------------------------------------------------------------------------------------------- comparisons
def local_state(model) -> dict:
    """This rank's whole tensors: parameters gathered from their shards (a collective), buffers as they are here."""
    return {
        key: (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
        for key, value in model.state_dict().items()
    }


def max_difference(a: dict, b: dict, keys=None) -> float:
    """Largest absolute difference over `keys` (default: all) of two dicts of tensors; inf when the keys, a shape or
    an integer tensor differ."""
    if a.keys() != b.keys():
        return float("inf")
    worst = 0.0
    for key in a if keys is None else keys:
        x, y = a[key].detach().cpu(), b[key].detach().cpu()
        if x.shape != y.shape:
            return float("inf")
        if x.is_floating_point():
            if x.numel():
                worst = max(worst, (x.double() - y.double()).abs().max().item())
        elif not torch.equal(x, y):
            return float("inf")
    return worst


def per_rank(value):
    """[rank 0's value, rank 1's value, ...] on every rank."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def state_differences(a: dict, b: dict, model) -> dict:
    """{"parameters": [per rank], "buffers": [per rank]} largest differences between two of this rank's states."""
    buffer_names = {name for name, _ in model.named_buffers()} & a.keys()
    parameter_names = a.keys() - buffer_names
    return {
        "parameters": per_rank(max_difference(a, b, parameter_names)),
        "buffers": per_rank(max_difference(a, b, buffer_names)),
    }


def sharding_report(model) -> dict:
    """What FSDP2 did to the model: its FSDP units, and whether every parameter is a DTensor and some are split."""
    params = dict(model.named_parameters())
    dtensors = {n: p for n, p in params.items() if isinstance(p, DTensor)}
    no_split = set(model._no_split_modules or [])
    layers = [m for m in model.modules() if type(m).__name__.removeprefix("FSDP") in no_split]
    return {
        "parameters": len(params),
        "dtensor_parameters": len(dtensors),
        "split_parameters": sum(p.to_local().numel() < p.numel() for p in dtensors.values()),
        "local_numel": sum(p.to_local().numel() for p in dtensors.values()),
        "full_numel": sum(p.numel() for p in params.values()),
        "root_is_fsdp_unit": isinstance(model, FSDPModule),
        "fsdp_units": sorted(type(m).__name__.removeprefix("FSDP") for m in model.modules() if isinstance(m, FSDPModule)),
        "no_split_layers": len(layers),
        "no_split_layers_sharded": sum(isinstance(m, FSDPModule) for m in layers),
    }


def noise(model, generator) -> dict:
    """The `generator` keyword when the model's forward takes one (as the trainer decides; DDP's wrapper is looked
    through): UNetAe and PatchPrior draw no noise and take none."""
    forward = getattr(model, "module", model).forward
    return {"generator": generator} if "generator" in inspect.signature(forward).parameters else {}


def eval_outputs(model, batch: dict) -> dict:
    """The outputs of a model in evaluation mode on a whole batch, with a fixed generator."""
    model.eval()
    with torch.no_grad():
        outputs = model(**batch, **noise(model, torch.Generator().manual_seed(7)))
    names = ("loss", "latents", "reconstruction", "logits")
    return {name: getattr(outputs, name) for name in names if getattr(outputs, name, None) is not None}


# ---------------------------------------------------------------------------------------------- training
def train_steps(model, optimizer, batch_fn, steps) -> list[float]:
    """One optimiser step per global batch of `steps`, on this rank's half; this rank's losses."""
    model.train()
    losses = []
    for step in steps:
        loss = model(**rank_half(batch_fn(step)), **noise(model, step_generator(step))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def make_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)


def run_model(name: str, spec, environments: dict, work_dir: Path) -> dict | None:
    build_fn, batch_fn = spec
    rank = dist.get_rank()
    report: dict = {"name": name}

    # 1. The reference: DDP replicas of the same initial model, each rank on its half of every batch.
    reference = build(build_fn, seed=0)
    initial_state = {k: v.clone() for k, v in reference.state_dict().items()}
    ddp = DistributedDataParallel(reference)
    report["ddp_losses"] = per_rank(train_steps(ddp, make_optimizer(ddp), batch_fn, range(STEPS)))
    ddp_state = {k: v.detach().clone() for k, v in reference.state_dict().items()}

    # 2. Sharded. Rank 1 builds from another seed: with cpu_ram_efficient_loading, rank 0's weights must reach it.
    model = build(build_fn, seed=0 if rank == 0 else 123)
    model_class = type(model)
    model, report["get_input_embeddings_error"] = shard(model, environments["sharded"])
    report["sharding"] = sharding_report(model)
    report["initial_vs_rank0"] = state_differences(local_state(model), initial_state, model)
    optimizer = make_optimizer(model)
    losses = train_steps(model, optimizer, batch_fn, range(CHECKPOINT_STEP))
    broadcast_buffers(model)  # what the training loop does before saving under FSDP
    for kind, environment in environments.items():
        save_checkpoint(model, optimizer, environment, work_dir / f"{name}-{kind}")
    report["checkpoint_dirs"] = {kind: str(work_dir / f"{name}-{kind}") for kind in environments}
    losses += train_steps(model, optimizer, batch_fn, range(CHECKPOINT_STEP, STEPS))
    report["fsdp_losses"] = per_rank(losses)
    final_state = local_state(model)
    report["fsdp_vs_ddp"] = state_differences(final_state, ddp_state, model)
    # buffers are not sharded, and FSDP never syncs them (DDP broadcasts rank 0's before every forward)
    buffers = {k: v for k, v in final_state.items() if k in dict(model.named_buffers())}
    all_buffers = per_rank(buffers)
    report["buffers_rank0_vs_rank1"] = max_difference(all_buffers[0], all_buffers[1])

    # 3. The gathered model through save_pretrained / from_pretrained (rank 0), against the sharded model's outputs
    # (computed by every rank: a forward of a sharded model is a collective).
    gathered = full_state_dict(model)
    probe_batch = batch_fn(99)
    sharded_outputs = eval_outputs(model, probe_batch)
    sharded_samples = None
    if isinstance(model, PatchPriorModel):  # generation runs through the autoencoder, which must stay unsharded
        model.set_autoencoder(prior_autoencoder())
        report["autoencoder_unsharded"] = not any(isinstance(p, DTensor) for p in model.autoencoder.parameters())
        sharded_samples = model.sample(3, generator=torch.Generator().manual_seed(5)).samples
    if rank == 0:
        report["gathered_vs_local"] = max_difference(gathered, final_state)
        # (a) The sharded instance's own save_pretrained, as `unwrap_model(model).save_pretrained(state_dict=...)`
        # does. fully_shard swapped the instance's class for a subclass it generates (FSDP<Name>, defined in torch),
        # and transformers copies the remote code of the instance's class. (save_pretrained empties the dict it is
        # given: a copy.)
        direct_dir = work_dir / f"{name}-pretrained-from-sharded-instance"
        model.save_pretrained(direct_dir, state_dict=dict(gathered))
        report["from_sharded_instance"] = {
            "auto_map": json.loads((direct_dir / "config.json").read_text()).get("auto_map", {}),
            "files": sorted(p.name for p in direct_dir.iterdir()),
        }
        # (b) An unsharded model of the original class holding the gathered weights.
        saved_dir = work_dir / f"{name}-pretrained"
        unsharded = model_class(model.config)
        unsharded.load_state_dict(gathered)
        unsharded.save_pretrained(saved_dir)
        report["saved"] = {
            "auto_map": json.loads((saved_dir / "config.json").read_text()).get("auto_map", {}),
            "files": sorted(p.name for p in saved_dir.iterdir()),
        }
        reloaded = model_class.from_pretrained(saved_dir)
        report["reloaded_vs_gathered"] = max_difference(reloaded.state_dict(), gathered)
        report["reloaded_outputs_vs_sharded"] = max_difference(eval_outputs(reloaded, probe_batch), sharded_outputs)
        if sharded_samples is not None:
            reloaded.set_autoencoder(model.autoencoder)
            samples = reloaded.sample(3, generator=torch.Generator().manual_seed(5)).samples
            report["reloaded_samples_vs_sharded"] = (samples - sharded_samples).abs().max().item()
    dist.barrier()

    # 4. Resume: a fresh sharded model (other weights) and optimiser load the step-2 checkpoint and train steps 2, 3.
    for kind, environment in environments.items():
        resumed, _ = shard(build(build_fn, seed=321 + rank), environment)
        resumed_optimizer = make_optimizer(resumed)
        load_checkpoint(resumed, resumed_optimizer, environment, work_dir / f"{name}-{kind}")
        report[f"resumed_{kind}_losses"] = per_rank(train_steps(resumed, resumed_optimizer, batch_fn,
                                                                range(CHECKPOINT_STEP, STEPS)))
        report[f"resumed_{kind}_vs_uninterrupted"] = state_differences(local_state(resumed), final_state, resumed)
    return report if rank == 0 else None


def main():
    output_dir = Path(sys.argv[1])
    PartialState(cpu=True)  # Accelerate's state (its helpers log through it): a gloo group of the torchrun processes
    environments = {kind: fsdp_environment(CONFIG_DIR / file) for kind, file in CONFIG_FILES.items()}
    specs = model_specs()
    scratch = [tempfile.mkdtemp(prefix="fsdp-", dir=output_dir) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(scratch, src=0)  # one folder for all ranks: rank 0 makes it, the others learn its name
    for name in sys.argv[2:] or list(specs):
        report = run_model(name, specs[name], environments, Path(scratch[0]))
        if report is not None:
            (output_dir / f"{name}.json").write_text(json.dumps(report, indent=1))
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: under one kernel set (native AVX-512, make test-kernels) a rank once
    # aborted there ("terminate called without an active exception", a gloo thread still joinable when its
    # destructor ran) after every report was written. The reports are on disk; nothing is left to clean up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
