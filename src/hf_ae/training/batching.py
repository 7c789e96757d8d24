"""Turning a data set into model inputs: tokenised text with padding to the batch's longest text, and batches
of texts of similar length.

Padding every text to one fixed length cost two thirds of each step of a byte-level funnel autoencoder on
python-lines (measured when this was written); padding to the batch's length and grouping lengths removes most of that.
"""

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices whose texts have similar lengths, in a random order that is a pure function of
    (seed, epoch), so that a resumed run sees the same batches (Accelerate calls `set_epoch`).

    Each epoch: shuffle the indices, cut them into chunks of `batch_size * chunk_batches`, sort each chunk by
    length (longest first), cut it into batches, and shuffle the batches. transformers' `LengthGroupedSampler`
    does the same per sample for its Trainer; here it yields whole batches, which is what a `DataLoader`'s
    `batch_sampler` takes and what Accelerate shards across processes.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, chunk_batches: int = 50,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_batches = chunk_batches
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        chunk_size = self.batch_size * self.chunk_batches
        batches = []
        for start in range(0, len(order), chunk_size):
            chunk = order[start : start + chunk_size]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index]


def tokenize_texts(dataset, tokenizer, max_sequence_length: int, split: str):
    """A split with a `text` column -> `input_ids` and `attention_mask` (lists; the collator pads per batch).
    A text longer than `max_sequence_length` tokens is an error, never truncated or dropped."""
    tokenized = dataset.map(
        lambda batch: tokenizer(batch["text"]),
        batched=True,
        remove_columns=dataset.column_names,
        desc=f"tokenizing {split}",
    )
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    too_long = [i for i, length in enumerate(lengths) if length > max_sequence_length]
    if too_long:
        first = too_long[0]
        raise ValueError(
            f"{len(too_long)} of {len(lengths)} {split} texts are longer than the model's max_sequence_length={max_sequence_length} "
            f"tokens (the longest has {max(lengths)}; e.g. row {first}: {dataset[first]['text'][:80]!r}). Nothing is "
            "truncated: raise max_sequence_length with --config_overrides max_sequence_length=N, or filter the data"
        )
    return tokenized, lengths


__all__ = ["LengthGroupedBatchSampler", "tokenize_texts"]
