"""Training on a stream (``--streaming``): the rows of a ``datasets.IterableDataset`` shuffled in a buffer, split
across the processes, and turned into model inputs in the DataLoader's workers as they are read.

A stream has no length and no random access, so what a map-style data set gets from samplers happens here:

* **shuffle**: ``IterableDataset.shuffle(seed, buffer_size)`` shuffles the order of the stream's shards and draws
  rows from a buffer of ``--shuffle_buffer_size``; ``set_epoch`` reshuffles each pass.
* **split across processes**: ``datasets.distributed.split_dataset_by_node`` gives each process whole shards
  when their number divides by the process count, else every process reads the stream and keeps one row in N.
  The loader is not prepared by Accelerate: its ``dispatch_batches`` would read the whole stream on the main
  process and send each process its batches.
* **images**: decoded, converted, resized and cropped per row (:class:`StreamedImages`); the random crop and flip
  draw from (seed, epoch, the image's content digest), so they do not depend on where the row falls in the
  shuffled order.
* **texts**: tokenized in chunks of ``batch_size * 50`` texts; with ``--group_by_length`` each chunk is sorted by
  length, cut into batches and the batches shuffled, as ``LengthGroupedBatchSampler`` does over a whole data set
  (:class:`StreamedTexts`).

A resumed run replays its position: the checkpoint stores, per process, the pass over the stream and the number
of batches read in it, and the resumed loader reads and drops that many batches (the rows are read and
transformed again, not trained on). The order of a stream read by loader workers depends on their number, and
the split on the number of processes, so a resume with other counts is refused (see ``check_resume``).
"""

from __future__ import annotations

import torch
from datasets.distributed import split_dataset_by_node

from ..data.images import ImageTransform, draw_generator, transformed_item
from ..data.streaming import content_digest

# Texts tokenized together and, with --group_by_length, sorted together: the chunk of LengthGroupedBatchSampler.
CHUNK_BATCHES = 50
# Rows read at a time when every loader worker reads the whole stream (StreamedRows.rows).
ROWS_PER_READ = 64


def stream_for_process(stream, seed: int, buffer_size: int, process_index: int, num_processes: int):
    """The raw train stream -> this process's shuffled share of it (a ``datasets.IterableDataset``)."""
    stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
    if num_processes > 1:
        stream = split_dataset_by_node(stream, rank=process_index, world_size=num_processes)
    return stream


class StreamedRows(torch.utils.data.IterableDataset):
    """A torch ``IterableDataset`` over a ``datasets.IterableDataset`` whose epoch it forwards (the workers are not
    persistent: each pass starts them anew with the stream's current epoch)."""

    def __init__(self, stream, seed: int):
        self.stream = stream
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def rows(self):
        """This loader worker's rows of the stream. datasets gives each worker whole shards, which leaves workers
        idle when the stream has fewer shards than workers (a text file is one shard): then every worker reads the
        stream's rows (lines, file paths: cheap) and keeps one in num_workers, so that the
        decoding, the expensive part, is shared."""
        worker = torch.utils.data.get_worker_info()
        if worker is None or worker.num_workers == 1 or self.stream.n_shards >= worker.num_workers:
            yield from self.stream
            return
        index = 0
        # IterableDataset.iter reads the whole (shuffled, per-process) stream, where __iter__ would shard it
        for batch in self.stream.iter(batch_size=ROWS_PER_READ):
            for row in (dict(zip(batch, values)) for values in zip(*batch.values())):
                if index % worker.num_workers == worker.id:
                    yield row
                index += 1


class StreamedImages(StreamedRows):
    """Rows of an image stream -> {"pixel_values": (C, H, W) float32 in [0, 1], "label"?}.

    Args:
        stream: this process's share of the stream, rows holding an undecoded ``datasets.Image`` value.
        column: the image column.
        transform: the image transform, with the training crop and flip.
        seed: the run's seed.
        skip_unreadable: skip an undecodable image with a warning naming it instead of raising.
    """

    def __init__(self, stream, column: str, transform: ImageTransform, seed: int, skip_unreadable: bool = False):
        super().__init__(stream, seed)
        self.column = column
        self.transform = transform
        self.skip_unreadable = skip_unreadable

    def __iter__(self):
        for row in self.rows():
            digest = int(content_digest(row[self.column])[:15], 16)  # the row's identity, whatever its position
            item = transformed_item(row, self.column, self.transform, draw_generator(self.seed, self.epoch, digest),
                                    self.skip_unreadable)
            if item is not None:
                yield item


class StreamedTexts(StreamedRows):
    """Rows of a text stream -> whole batches: lists of ``batch_size`` tokenized texts ({"input_ids",
    "attention_mask"} lists), for a DataLoader with ``batch_size=None`` and a padding collator.

    Args:
        stream: this process's share of the stream, rows holding "text".
        tokenizer: the model's tokenizer.
        max_sequence_length: the longest text allowed, in tokens; a longer one is an error naming it.
        batch_size: texts per batch.
        group_by_length: sort each chunk of ``batch_size * CHUNK_BATCHES`` texts by length and shuffle its batches.
        seed: the run's seed.
    """

    def __init__(self, stream, tokenizer, max_sequence_length: int, batch_size: int, group_by_length: bool, seed: int):
        super().__init__(stream, seed)
        self.tokenizer = tokenizer
        self.max_sequence_length = max_sequence_length
        self.batch_size = batch_size
        self.group_by_length = group_by_length

    def __iter__(self):
        chunk: list[str] = []
        chunk_index = 0
        for row in self.rows():
            chunk.append(row["text"])
            if len(chunk) == self.batch_size * CHUNK_BATCHES:
                yield from self._batches(chunk, chunk_index)
                chunk, chunk_index = [], chunk_index + 1
        if chunk:
            yield from self._batches(chunk, chunk_index)

    def _batches(self, texts: list[str], chunk_index: int):
        encoded = self.tokenizer(texts)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        too_long = [i for i, length in enumerate(lengths) if length > self.max_sequence_length]
        if too_long:
            first = too_long[0]
            raise ValueError(
                f"a streamed training text has {lengths[first]} tokens, more than the model's max_sequence_length="
                f"{self.max_sequence_length} ({texts[first][:80]!r}). Nothing is truncated: raise max_sequence_length "
                "with --config_overrides max_sequence_length=N, or filter the data"
            )
        order = list(range(len(texts)))
        if self.group_by_length:
            order.sort(key=lambda i: -lengths[i])  # longest first; stable
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.group_by_length:
            worker = torch.utils.data.get_worker_info()
            worker_id = worker.id if worker is not None else 0
            generator = torch.Generator().manual_seed(
                self.seed * 1_000_003 + self.epoch * 7_919 + chunk_index * 104_729 + worker_id)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        for batch in batches:
            yield [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i]} for i in batch]


def check_resume(state: dict, num_processes: int, num_workers: int) -> list[list[int]]:
    """A checkpoint's training state -> the (pass, batches read in it) of every process, or a ValueError saying why
    the stream's position cannot be restored."""
    positions = state.get("stream_positions")
    if not state.get("streaming") or positions is None:
        raise ValueError("this checkpoint was not written by a --streaming run, so it holds no position in the stream "
                         "to resume from; resume it without --streaming, or start the streamed run afresh")
    saved_processes, saved_workers = state.get("num_processes"), state.get("dataloader_num_workers")
    if saved_processes != num_processes or saved_workers != num_workers:
        raise ValueError(
            f"this checkpoint was written by {saved_processes} process(es) with --dataloader_num_workers "
            f"{saved_workers}; this run has {num_processes} and {num_workers}. A stream is split across the processes "
            "and its order depends on the loader workers, so its position can be restored only with the same counts"
        )
    return positions


__all__ = ["CHUNK_BATCHES", "StreamedImages", "StreamedTexts", "check_resume", "stream_for_process"]
