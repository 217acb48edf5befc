"""Word-level report tokenizer built with the `tokenizers` library (the R2Gen vocabulary, as a fast tokenizer)."""

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2, 3
# No size cap: min_frequency alone decides the vocabulary, as in R2Gen (the trainer's default cap is 30,000).
_UNLIMITED_VOCAB_SIZE = 2**31 - 1


def build_report_tokenizer(
    reports: Iterable[str], min_frequency: int = 3, model_max_length: int = 60
) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer on (training) reports.

    Reports are expected already cleaned (`cleaning.clean_report`): the caller cleans, this function only
    lower-cases (a normalizer, applied at encoding time too). Words are split on whitespace alone, as R2Gen's
    ``report.split()`` does, so "x-ray" is one word and ``decode(ids, skip_special_tokens=True)`` gives the
    cleaned report back. Words seen fewer than `min_frequency` times map to ``[UNK]``.

    Special tokens: ``[PAD]`` = 0, ``[BOS]`` = 1, ``[EOS]`` = 2, ``[UNK]`` = 3. A report is encoded as
    ``[BOS] words [EOS]``; truncation (`truncation=True`, at most `model_max_length` tokens unless `max_length`
    is given) shortens the words and keeps ``[EOS]`` last, unlike R2Gen, which cut it off long reports.

    The vocabulary order is deterministic: the special tokens, then the words by decreasing count, ties broken
    by byte-wise order of the word (the ordering `tokenizers`' `WordLevelTrainer` uses). R2Gen sorted its
    vocabulary alphabetically, so ids differ from R2Gen's while the set of words is the same.

    Returns:
        A `PreTrainedTokenizerFast`, saved with `save_pretrained` and loaded back with `AutoTokenizer`.
    """
    reports = list(reports)
    if not reports:
        raise ValueError("Cannot build a report tokenizer from no reports; expected an iterable of report strings.")
    for index, report in enumerate(reports):
        if not isinstance(report, str):
            raise TypeError(f"Report {index} must be a str, got {type(report).__name__}.")

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(
        vocab_size=_UNLIMITED_VOCAB_SIZE,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(reports, trainer=trainer)
    return _report_tokenizer(tokenizer, model_max_length)


def report_tokenizer_from_vocab(words: Iterable[str], model_max_length: int = 60) -> PreTrainedTokenizerFast:
    """A report tokenizer with a given vocabulary: the special tokens (ids 0-3, as `build_report_tokenizer`), then
    `words` in their order (ids 4, 5, ...). Words must be distinct, lower-case and free of whitespace; special
    tokens among them are an error (map a foreign unknown-word token such as R2Gen's ``<unk>`` to ``[UNK]`` first).
    """
    words = list(words)
    seen = set(SPECIAL_TOKENS)
    for index, word in enumerate(words):
        if not isinstance(word, str) or not word or word != word.lower() or len(word.split()) != 1:
            raise ValueError(f"Vocabulary entry {index} ({word!r}): expected a lower-case word without whitespace.")
        if word in seen:
            raise ValueError(f"Vocabulary entry {index} ({word!r}) is a special token or repeats an earlier entry.")
        seen.add(word)
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _report_tokenizer(tokenizer, model_max_length)


def _report_tokenizer(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """[BOS] words [EOS] encoding and the transformers wrapper with the special tokens."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        special_tokens=[(token, tokenizer.token_to_id(token)) for token in (BOS_TOKEN, EOS_TOKEN)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
