"""Tokenizers for the text models: byte-level (no files, nothing to train) or a byte-level BPE trained with
`tokenizers` on the training split. Both put `<pad>`=0, `</s>`=1, `<unk>`=2 first, append `</s>` to every text,
save with `save_pretrained` next to the model, and load back with `AutoTokenizer.from_pretrained`.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import ByT5Tokenizer, PreTrainedTokenizerFast

TOKENIZER_KINDS = ("byte", "bpe")
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in ByT5


def build_tokenizer(kind: str = "byte", texts: Iterable[str] | None = None, vocab_size: int | None = None):
    """`"byte"`: `ByT5Tokenizer(extra_ids=0)` (259 ids). `"bpe"`: a byte-level BPE of `vocab_size` ids (specials
    included) trained on `texts`; byte-level, so any text encodes without unknown tokens."""
    if kind == "byte":
        if vocab_size is not None:
            raise ValueError(f"--vocab_size applies to --tokenizer bpe; the byte tokenizer has 259 ids, got {vocab_size}")
        return ByT5Tokenizer(extra_ids=0)
    if kind != "bpe":
        raise ValueError(f"--tokenizer must be one of {TOKENIZER_KINDS}, got {kind!r}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(SPECIAL_TOKENS) + len(alphabet)
    if vocab_size is None or vocab_size < minimum:
        raise ValueError(
            f"--tokenizer bpe needs --vocab_size of at least {minimum} (3 special tokens + {len(alphabet)} bytes), "
            f"got {vocab_size}"
        )
    if texts is None:
        raise ValueError("a BPE tokenizer is trained on texts; none were given")
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: a line of code starts where it starts.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


__all__ = ["TOKENIZER_KINDS", "build_tokenizer"]
