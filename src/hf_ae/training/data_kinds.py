"""What the training loop needs to know about the data it trains on, one small object per kind of data: images,
texts, and the codes a patch prior learns. The loop in trainer.py asks the object and never branches on the kind.

Each kind checks the arguments that depend on the data, gives the config fields the data decides (`data_shape`),
builds the train and eval `DataLoader`s (collation, batch sampler, workers), turns a batch into the model's inputs
(the input noise of a denoiser, the token deletion of a text autoencoder), evaluates, runs the end-of-training SVM
probe, and saves what it adds to the model folder (tokenizer, samples).

Streams live here too, not in the loop: with --streaming the train split is a `datasets.IterableDataset`, and
`prepare_loaders` builds its loader from this process's shuffled share of the stream (training/streams.py), left
unprepared by Accelerate; it has no length, so the loop needs --max_steps, and `start_position` restores a
resumed run's place in it. A kind whose data changes per epoch gets it through `set_epoch`, and
`loader_options` is where `pin_memory` and persistent workers go on a GPU.
"""

import math

import datasets as hf_datasets
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding

from ..data import (
    AugmentedImages,
    ImageTransform,
    collate_readable,
    dataset_modality,
    image_transform_of,
    is_streaming,
)
from ..data.images import UnreadableImageError, image_rows, on_the_fly_view
from ..evaluation.likelihood import evaluate_code_likelihood
from ..evaluation.probe import run_probe
from ..evaluation.reconstruction import evaluate_image_reconstruction, evaluate_text_reconstruction
from ..models import MODEL_CLASSES
from .arguments import DataArguments, ModelArguments, TrainArguments
from .artifacts import save_prior_images, save_sample_images, save_text_samples
from .batching import LengthGroupedBatchSampler, tokenize_texts
from .prior import (
    PRIOR_MODEL,
    check_class_labels,
    code_datasets,
    load_prior_autoencoder,
    prior_autoencoder_name,
    prior_data_shape,
)
from .streams import StreamedImages, StreamedTexts, check_resume, stream_for_process
from .tokenization import build_tokenizer

# The SVM probe runs at the end of training on labelled data sets up to this many training rows (an RBF SVC
# grows quadratically with the rows; scripts/probe_svm.py runs it on any size).
PROBE_MAX_TRAIN_ROWS = 20_000
# Training images whose latents give the latent scale (config.scaling_factor, shift_factor) at the end of a run.
LATENT_SCALE_ROWS = 2_000
# With --streaming: the first rows of the shuffled stream that the probe trains its SVM on, and that a BPE
# tokenizer is trained on (a stream has no end to read up to).
STREAM_PROBE_ROWS = 5_000
STREAM_TOKENIZER_ROWS = 100_000


def check_arguments(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> None:
    """The checks that need no data, run before anything is loaded or written: a patch prior's autoencoder, the
    prior's options given to another model, and what a stream needs."""
    prior_autoencoder_name(model_args, train_args)
    if data_args.streaming:
        if train_args.max_steps <= 0:
            raise ValueError("--streaming reads a stream of unknown length, so --num_train_epochs cannot say how "
                             "many steps to train: pass --max_steps N")
        if model_args.model == PRIOR_MODEL:
            raise ValueError("--model patch_prior learns the codes of images encoded once before training; it does "
                             "not train on a stream (drop --streaming)")


def model_takes_text(model_name: str) -> bool:
    """Whether `--model` has a `modality` config field (it then trains on texts or images; the others on images)."""
    config_class, _ = MODEL_CLASSES.get(model_name, (None, None))
    return config_class is not None and "modality" in config_class().to_dict()


def add_input_noise(clean: torch.Tensor, train_args: TrainArguments, generator: torch.Generator) -> torch.Tensor:
    """clean (B, C, H, W) + N(0, std^2) noise: std = --input_noise_std, or per image uniform in [0, it] with
    --input_noise_uniform; clipped to [0, 1] unless --input_noise_clip False."""
    # the noise is drawn before the levels: the benchmark's denoisers were trained with this order
    noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    std = train_args.input_noise_std
    if train_args.input_noise_uniform:  # one level per image, (B, 1, 1, 1)
        std = std * torch.rand((clean.shape[0], 1, 1, 1), generator=generator, device=clean.device, dtype=clean.dtype)
    noisy = clean + std * noise
    return noisy.clamp(0, 1) if train_args.input_noise_clip else noisy


def delete_input_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    probability: float,
    eos_token_id: int,
    pad_token_id: int,
    generator: torch.Generator,
    share: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) texts -> (B, T) copies with each token deleted with `probability` (the end-of-sequence
    token always kept), the survivors moved left and re-padded with `pad_token_id`; and their mask. With `share`
    < 1 each text is picked for deletions with that probability and the others stay whole. The length stays T
    (cutting it to the longest row would read a count back from the device every step).
    The input noise of a denoising text autoencoder (the token deletion of Shen et al. 2020, DAAE); written here
    because the data collators of transformers mask tokens for MLM but do not delete them."""
    mask = attention_mask.bool()
    draws = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    picked = torch.rand((input_ids.shape[0], 1), generator=generator, device=input_ids.device) < share  # (B, 1)
    keep = mask & ((draws >= probability) | (input_ids == eos_token_id) | ~picked)  # (B, T)
    # a stable sort on "deleted" moves the kept tokens to the front in their order
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    kept_mask = keep.gather(1, order)
    kept_ids = input_ids.gather(1, order).masked_fill(~kept_mask, pad_token_id)
    return kept_ids, kept_mask.to(attention_mask.dtype)


def load_or_build_tokenizer(model_args: ModelArguments, train_texts):
    """The saved model's tokenizer when starting from one, else a new byte-level or BPE tokenizer."""
    if model_args.model_name_or_path is not None:
        try:
            return AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"{model_args.model_name_or_path} has no tokenizer to train a text model with: {error}") from error
    return build_tokenizer(model_args.tokenizer, train_texts if model_args.tokenizer == "bpe" else None,
                           model_args.vocab_size)


def pixel_values_only(split):
    """An image split whose rows read as {"pixel_values": (C, H, W) float32 tensor}: its stored arrays formatted
    for torch, or its image column read on the fly (hf_ae.data.images) by the transform the split carries."""
    on_the_fly = image_transform_of(split)
    if on_the_fly is not None:
        column, _ = on_the_fly
        return split.select_columns([column])
    return split.with_format("torch", columns=["pixel_values"])


def augmentation_options(data_args: DataArguments) -> list[str]:
    """The per-sample image options given (--random_crop, --random_flip, --skip_unreadable_images)."""
    names = ("random_crop", "random_flip", "skip_unreadable_images")
    return [f"--{name}" for name in names if getattr(data_args, name)]


def probe_metrics(probe: dict) -> dict[str, float]:
    """The probe's accuracies under the names the model card and all_results.json (with `eval_`) give them."""
    return {
        "probe_accuracy": probe["latents_concatenated"],
        "probe_accuracy_mean_pooled": probe["latents_mean_pooled"],
        "probe_accuracy_raw_inputs": probe["raw_inputs"],
    }


class TrainingData:
    """The data of one training run. A kind sets `data_shape` and `train_set` / `eval_set` in its constructor (after
    `check_arguments`), and `bind_model` finishes what needs the built model.

    Attributes:
        data_shape (`dict`): the config fields the data decides (image size, vocabulary, ...), for `build_model`.
        train_set, eval_set: what the loaders read (map-style data sets of tensors, or of token lists to collate).
        collate_fn: the loaders' collation (None: torch's default).
        tokenizer: saved with a text model; None for the other kinds.
        streaming (`bool`): the train split is a stream (`datasets.IterableDataset`); its loader is built from
            this process's share of it by `streamed_train_set`.
        num_train_samples (`int` or None), num_eval_samples (`int`): the sizes in the start-up line and
            all_results.json; None for a stream, whose length is unknown.
    """

    collate_fn = None
    tokenizer = None

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments, datasets):
        self.model_args, self.data_args, self.train_args = model_args, data_args, train_args
        self.datasets = datasets
        self.streaming = is_streaming(datasets["train"])
        self.num_train_samples = None if self.streaming else len(datasets["train"])
        self.num_eval_samples = len(datasets["test"])
        self.check_arguments()
        if train_args.save_directions and "label" not in (datasets["train"].column_names or []):
            raise ValueError(f"--save_directions writes a direction per label, but the training data has no 'label' "
                             f"column ({datasets['train'].column_names})")

    def check_arguments(self) -> None:
        """Raise ValueError on an option that does not apply to this kind of data."""

    def bind_model(self, model) -> None:
        """What this kind does once the model is built (before its loaders are), for data that depends on it."""

    def attach(self, model) -> None:
        """Give the trained model that is saved (the unwrapped one, or the whole copy gathered from FSDP shards) what
        it needs besides its weights to make its samples and card."""

    def loader_options(self) -> dict:
        """Keyword arguments of the training DataLoader that every kind shares: its worker processes, kept alive
        across epochs (a kind whose data changes per epoch shares the epoch with them, see AugmentedImages), and
        pinned memory where batches go to a GPU."""
        workers = self.data_args.dataloader_num_workers
        # A stream's workers start anew each pass: they take the stream's epoch (its shuffle) when they start.
        return {"num_workers": workers, "persistent_workers": workers > 0 and not self.streaming,
                "pin_memory": torch.cuda.is_available() and not self.train_args.cpu}

    def train_batching(self) -> dict:
        """How the training DataLoader batches: shuffled batches of --per_device_train_batch_size (Accelerate swaps
        in a sampler seeded from (seed, epoch))."""
        return {"batch_size": self.train_args.per_device_train_batch_size, "shuffle": True}

    def dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """The (train, eval) loaders, not yet prepared by Accelerate."""
        train_loader = DataLoader(self.train_set, **self.train_batching(), collate_fn=self.collate_fn,
                                  **self.loader_options())
        return train_loader, self.eval_dataloader()

    def eval_dataloader(self) -> DataLoader:
        return DataLoader(self.eval_set, batch_size=self.train_args.per_device_eval_batch_size,
                          collate_fn=self.collate_fn)

    def streamed_train_set(self, stream) -> tuple[torch.utils.data.IterableDataset, dict]:
        """This process's share of the train stream -> (torch IterableDataset, batching keywords of its loader)."""
        raise NotImplementedError(f"{type(self).__name__} does not train on a stream")

    def prepare_loaders(self, accelerator) -> tuple:
        """The (train, eval) loaders prepared by Accelerate; a stream's train loader reads this process's shuffled
        share of the stream and stays unprepared (Accelerate would read the stream on the main process only)."""
        if not self.streaming:
            return accelerator.prepare(*self.dataloaders())
        stream = stream_for_process(self.datasets["train"], self.train_args.seed, self.data_args.shuffle_buffer_size,
                                    accelerator.process_index, accelerator.num_processes)
        self.train_set, batching = self.streamed_train_set(stream)
        train_loader = DataLoader(self.train_set, **batching, collate_fn=self.collate_fn, **self.loader_options())
        return train_loader, accelerator.prepare(self.eval_dataloader())

    def steps_per_epoch(self, train_loader) -> int | None:
        """Optimizer steps in a pass over the training data; None for a stream (its length is unknown)."""
        if self.streaming:
            return None
        return max(1, math.ceil(len(train_loader) / self.train_args.gradient_accumulation_steps))

    def start_position(self, state: dict | None, steps_per_epoch: int | None, accelerator) -> tuple[int, int]:
        """Where a run starts: (epoch, micro-batches of it already trained on), from a checkpoint's training state
        (None for a fresh run). A map-style epoch is steps_per_epoch optimizer steps (Accelerate also steps at the
        end of each epoch, whatever the remainder of its micro-batches); a stream stores each process's place."""
        if state is None:
            return 0, 0
        if self.streaming:
            positions = check_resume(state, accelerator.num_processes, self.data_args.dataloader_num_workers)
            return tuple(positions[accelerator.process_index])
        if state.get("streaming"):
            raise ValueError("this checkpoint was written by a --streaming run: its place in the data is a position in "
                             "the stream; resume it with --streaming")
        epoch, steps_into_epoch = divmod(state["global_step"], steps_per_epoch)
        return epoch, steps_into_epoch * self.train_args.gradient_accumulation_steps

    def epoch_batches(self, train_loader, accelerator, epoch: int, skip: int):
        """The training batches of one epoch (one pass over a stream) on the run's device, after the first `skip`
        (those a resumed run had trained on)."""
        self.set_epoch(epoch)
        if not self.streaming:
            train_loader.set_epoch(epoch)
            return accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        return self._streamed_batches(train_loader, accelerator, epoch, skip)

    @staticmethod
    def _streamed_batches(train_loader, accelerator, epoch: int, skip: int):
        # A stream cannot seek: a resumed run reads and drops the batches it had trained on.
        read = 0
        for read, batch in enumerate(train_loader, start=1):
            if read > skip:
                yield send_to_device(batch, accelerator.device)
        if read == 0:
            raise ValueError(f"process {accelerator.process_index} of {accelerator.num_processes} read no training "
                             f"rows from the stream in pass {epoch}: the stream is empty or has fewer rows (or shards) "
                             "than there are processes")

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (Accelerate gives the samplers theirs); a training set that draws per
        epoch (random crops and flips, a stream's shuffle) gets it too."""
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)

    def model_inputs(self, batch: dict, generator: torch.Generator) -> dict:
        """A training batch -> keyword arguments of the model's forward; `generator` draws any input noise."""
        raise NotImplementedError

    def evaluate(self, model, eval_loader, accelerator) -> dict[str, float]:
        """Test-set metrics, gathered across processes."""
        raise NotImplementedError

    def probe_runs(self) -> bool:
        """Whether `probe` will run: --probe is on and the data has labels and at most PROBE_MAX_TRAIN_ROWS training
        rows (a stream: the probe reads its first STREAM_PROBE_ROWS rows)."""
        if not self.train_args.probe or any("label" not in self.datasets[s].column_names for s in ("train", "test")):
            return False
        return self.streaming or len(self.datasets["train"]) <= PROBE_MAX_TRAIN_ROWS

    def probe(self, model) -> dict | None:
        """The SVM probe's accuracies when `probe_runs()` (a stream: on its first STREAM_PROBE_ROWS rows in the
        shuffled order), else None. Runs on the unwrapped model, in one process."""
        if not self.probe_runs():
            return None
        if self.streaming:
            return run_probe(model, self.probe_datasets(), self.tokenizer)
        return run_probe(model, self.datasets, self.tokenizer)

    def probe_datasets(self) -> hf_datasets.DatasetDict:
        """A stream's first STREAM_PROBE_ROWS rows (shuffled with the run's seed) in memory, read like the test
        split; and the test split."""
        stream = stream_for_process(self.datasets["train"], self.train_args.seed, self.data_args.shuffle_buffer_size,
                                    process_index=0, num_processes=1)
        test = self.datasets["test"]
        rows = list(stream.take(STREAM_PROBE_ROWS))
        on_the_fly = image_transform_of(test)
        if on_the_fly is None:
            return hf_datasets.DatasetDict({"train": hf_datasets.Dataset.from_list(rows), "test": test})
        column, transform = on_the_fly
        features = test.with_format(None).features
        train = hf_datasets.Dataset.from_list([{k: row[k] for k in features} for row in rows], features=features)
        return hf_datasets.DatasetDict({"train": on_the_fly_view(train, column, transform), "test": test})

    def directions(self, model):
        """With --save_directions, the latent directions of each label (`hf_ae.editing.compute_directions`, which
        samples past its row limit) on the training split (a stream: its first STREAM_PROBE_ROWS rows, as the probe
        reads), else None. Runs on the unwrapped model, in one process."""
        if not self.train_args.save_directions:
            return None
        from tqdm.auto import tqdm

        from ..editing import compute_directions

        rows = self.probe_datasets()["train"] if self.streaming else self.datasets["train"]
        with tqdm(desc="linear probe fits (directions)", unit="fit", leave=False) as bar:
            return compute_directions(model, rows, self.tokenizer, dataset_name=self.data_args.dataset, progress=bar,
                                      seed=self.train_args.seed)

    def save_with_model(self, model, folder) -> dict:
        """Write what this kind adds to the model's folder (tokenizer, samples) -> the model card's `images` and
        `text_samples`, and any other context of the card."""
        raise NotImplementedError

    def latent_scale_rows(self) -> hf_datasets.Dataset | None:
        """The training rows whose latents give the latent scale (the first LATENT_SCALE_ROWS), or None where this
        kind has no image latents to scale."""
        return None


class ImageData(TrainingData):
    """Images (`pixel_values`, (C, H, W) in [0, 1], square); with --input_noise_std the model denoises."""

    def __init__(self, model_args, data_args, train_args, datasets):
        super().__init__(model_args, data_args, train_args, datasets)
        self.eval_set = pixel_values_only(datasets["test"])
        # a stream's train set is built per process by streamed_train_set
        self.train_set = None if self.streaming else pixel_values_only(datasets["train"])
        first = self.eval_set[0]["pixel_values"]  # (C, H, W)
        if first.shape[1] != first.shape[2]:
            raise ValueError(f"{model_args.model} needs square images, the data set has {first.shape[1]}x{first.shape[2]}")
        self.data_shape = {"num_channels": int(first.shape[0]), "image_size": int(first.shape[1])}
        if model_takes_text(model_args.model):
            self.data_shape["modality"] = "image"
        if not self.streaming and (data_args.random_crop or data_args.random_flip or data_args.skip_unreadable_images):
            # Decoded, cropped and flipped per sample in the loader workers, with draws from (seed, epoch, row).
            self.train_set = AugmentedImages(
                datasets["train"], crop="random" if data_args.random_crop else "center", flip=data_args.random_flip,
                seed=train_args.seed, skip_unreadable=data_args.skip_unreadable_images,
            )
            if data_args.skip_unreadable_images:
                self.collate_fn = collate_readable

    def check_arguments(self) -> None:
        dataset = self.data_args.dataset
        if self.model_args.tokenizer != "byte" or self.model_args.vocab_size is not None:
            raise ValueError(f"--tokenizer and --vocab_size build the tokenizer of a text model; {dataset!r} "
                             "holds image")
        if self.train_args.input_token_deletion > 0:
            raise ValueError(f"--input_token_deletion deletes tokens of texts; {dataset!r} holds image")

    def streamed_train_set(self, stream):
        """Images decoded, resized and cropped (randomly with --random_crop) and flipped per row as they stream by,
        with the test split's transform; batches of --per_device_train_batch_size."""
        column, transform = image_transform_of(self.datasets["test"])
        transform = ImageTransform(transform.mode, transform.image_size, transform.resolution,
                                   "random" if self.data_args.random_crop else "center", self.data_args.random_flip,
                                   transform.expected_size)
        images = StreamedImages(stream, column, transform, self.train_args.seed,
                                skip_unreadable=self.data_args.skip_unreadable_images)
        return images, {"batch_size": self.train_args.per_device_train_batch_size}

    def model_inputs(self, batch, generator):
        clean = batch["pixel_values"]  # (B, C, H, W)
        if self.train_args.input_noise_std > 0:  # denoising: noisy inputs, clean targets
            return {"pixel_values": add_input_noise(clean, self.train_args, generator), "labels": clean}
        return {"pixel_values": clean}

    def evaluate(self, model, eval_loader, accelerator):
        return evaluate_image_reconstruction(model, eval_loader, accelerator)

    def save_with_model(self, model, folder):
        images = save_sample_images(model, self.datasets["test"], folder, self.train_args.num_sample_images,
                                    self.train_args.seed)
        return {"images": images, "text_samples": None}

    def latent_scale_rows(self) -> hf_datasets.Dataset:
        """The first LATENT_SCALE_ROWS training images (a stream's first rows in its shuffled order), read as the test
        split is (no augmentation); with --skip_unreadable_images without the unreadable ones, which training skipped
        too, with a warning naming each."""
        train = self.probe_datasets()["train"] if self.streaming else self.datasets["train"]
        rows = train.select(range(min(len(train), LATENT_SCALE_ROWS)))
        if self.data_args.skip_unreadable_images:
            rows = rows.select([index for index in range(len(rows)) if is_readable(rows, index)])
        return rows


def is_readable(dataset, index: int) -> bool:
    try:
        image_rows(dataset, [index])
    except UnreadableImageError:
        return False
    return True


class TextData(TrainingData):
    """Texts (`text`), tokenized by the model's tokenizer and padded to each batch's longest; with
    --group_by_length in batches of similar lengths; with --input_token_deletion the model denoises."""

    def __init__(self, model_args, data_args, train_args, datasets):
        super().__init__(model_args, data_args, train_args, datasets)
        if self.streaming:  # a BPE tokenizer learns from the stream's first rows
            texts = (row["text"] for row in datasets["train"].take(STREAM_TOKENIZER_ROWS))
        else:
            texts = datasets["train"]["text"]
        self.tokenizer = load_or_build_tokenizer(model_args, texts)
        self.collate_fn = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")
        self.data_shape = {
            "modality": "text",
            "vocab_size": len(self.tokenizer),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }

    def check_arguments(self) -> None:
        if not model_takes_text(self.model_args.model):
            raise ValueError(f"--model {self.model_args.model} trains on images; {self.data_args.dataset!r} holds text")
        if self.train_args.input_noise_std > 0:
            raise ValueError("--input_noise_std adds Gaussian noise to images; it does not apply to text data")
        given = augmentation_options(self.data_args)
        if given:
            raise ValueError(f"{', '.join(given)} transform images; {self.data_args.dataset!r} holds text")

    def bind_model(self, model) -> None:
        """Tokenize both splits; a text longer than the model's max_sequence_length is an error."""
        self.max_sequence_length = model.config.max_sequence_length
        if not self.streaming:  # a stream is tokenized as it is read (streamed_train_set)
            self.train_set, self.train_lengths = tokenize_texts(self.datasets["train"], self.tokenizer,
                                                                self.max_sequence_length, "train")
        self.eval_set, _ = tokenize_texts(self.datasets["test"], self.tokenizer, self.max_sequence_length, "test")

    def streamed_train_set(self, stream):
        """Texts tokenized in chunks as they stream by, in whole batches (grouped by length with --group_by_length),
        which the loader passes to the padding collator one at a time."""
        texts = StreamedTexts(stream, self.tokenizer, self.max_sequence_length,
                              self.train_args.per_device_train_batch_size, self.train_args.group_by_length,
                              self.train_args.seed)
        return texts, {"batch_size": None}

    def train_batching(self) -> dict:
        if not self.train_args.group_by_length:
            return super().train_batching()
        batch_size, seed = self.train_args.per_device_train_batch_size, self.train_args.seed
        return {"batch_sampler": LengthGroupedBatchSampler(self.train_lengths, batch_size, seed)}

    def model_inputs(self, batch, generator):
        """(B, T) token ids padded to the batch's longest text, and their mask -> the batch itself (the model
        reconstructs its inputs), or with --input_token_deletion the texts of `delete_input_tokens`
        (--input_token_deletion_share of them shortened) and the clean texts as labels (-100 on padding, as the
        model's own default labels)."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.train_args.input_token_deletion == 0:
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        noisy_ids, noisy_mask = delete_input_tokens(
            input_ids, attention_mask, self.train_args.input_token_deletion, self.tokenizer.eos_token_id,
            self.tokenizer.pad_token_id, generator, share=self.train_args.input_token_deletion_share,
        )
        labels = input_ids.masked_fill(~attention_mask.bool(), -100)
        return {"input_ids": noisy_ids, "attention_mask": noisy_mask, "labels": labels}

    def evaluate(self, model, eval_loader, accelerator):
        return evaluate_text_reconstruction(model, eval_loader, accelerator)

    def save_with_model(self, model, folder):
        self.tokenizer.save_pretrained(folder)
        samples = save_text_samples(model, self.tokenizer, self.datasets["test"], folder, self.data_args.dataset,
                                    seed=self.train_args.seed)
        return {"images": {}, "text_samples": samples}


class PriorCodeData(ImageData):
    """The codes of clean images under a PatchVae with discrete codes (`--autoencoder`), encoded once: `input_ids`
    (N,) per image and, when the data has labels, `class_labels`. What a patch prior trains on; it has no latents
    to probe."""

    def __init__(self, model_args, data_args, train_args, datasets, accelerator):
        super().__init__(model_args, data_args, train_args, datasets)
        autoencoder_name = prior_autoencoder_name(model_args, train_args)
        with accelerator.main_process_first():  # the first process downloads a Hub autoencoder
            self.autoencoder = load_prior_autoencoder(autoencoder_name, self.data_shape, accelerator.device)
        self.data_shape = prior_data_shape(model_args, self.autoencoder, autoencoder_name, datasets, data_args.dataset)
        self.train_set, self.eval_set = code_datasets(self.autoencoder, datasets, train_args.per_device_eval_batch_size)

    def check_arguments(self) -> None:
        super().check_arguments()
        if self.train_args.save_directions:
            raise ValueError("--save_directions: a patch prior has no latents of its own to edit; save the directions "
                             "of its autoencoder (hf-ae probe --model <autoencoder> --save_directions)")
        given = augmentation_options(self.data_args)
        if given:
            raise ValueError(f"{', '.join(given)}: --model patch_prior learns the codes of the images, encoded once "
                             "before training, so per-epoch crops and flips do not apply")
        if self.train_args.input_noise_std > 0:
            raise ValueError("--model patch_prior learns the codes of clean images: it needs image data and no "
                             "--input_noise_std")

    def bind_model(self, model) -> None:
        # The autoencoder joins the prior only after training (`attach`, on the model that is saved): a submodule
        # before `accelerator.prepare` would be wrapped, sharded and handed to the optimiser with the prior.
        check_class_labels(model, self.train_set, self.eval_set, self.data_args.dataset)
        self.conditional = model.config.num_classes > 0

    def attach(self, model) -> None:
        model.set_autoencoder(self.autoencoder)  # decodes the samples saved with the model; not part of its weights

    def model_inputs(self, batch, generator):
        """(B, N) codes, and the (B,) class labels of a conditional prior."""
        inputs = {"input_ids": batch["input_ids"]}
        if self.conditional:
            inputs["class_labels"] = batch["class_labels"]
        return inputs

    def evaluate(self, model, eval_loader, accelerator):
        return evaluate_code_likelihood(model, eval_loader, accelerator)

    def probe_runs(self) -> bool:
        return False  # a prior has no latents of its own to probe

    def save_with_model(self, model, folder):
        """The prior's samples, decoded by its autoencoder; the card also describes the autoencoder and the bits a
        uniform guess of the codes needs."""
        images = save_prior_images(model, folder, self.train_args.num_sample_images, self.train_args.seed)
        config = model.config
        return {"images": images, "text_samples": None, "autoencoder_config": model.autoencoder.config,
                "uniform_bits_per_image": config.num_patches * math.log2(config.num_codes)}


def training_data_for(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments, datasets,
                      accelerator) -> TrainingData:
    """The kind of `datasets`: text when it holds text (a text kind names an image-only model, --model
    patch_prior included, in its error), a patch prior's codes for --model patch_prior, else images."""
    if dataset_modality(datasets["train"]) == "text":
        return TextData(model_args, data_args, train_args, datasets)
    if model_args.model == PRIOR_MODEL:
        return PriorCodeData(model_args, data_args, train_args, datasets, accelerator)
    return ImageData(model_args, data_args, train_args, datasets)
