from collections import Counter

import pytest
from transformers import AutoTokenizer

from cxrgen.processing.cleaning import clean_report
from cxrgen.processing.tokenization import build_report_tokenizer

pytestmark = pytest.mark.transformers_compat


RAW_REPORTS = [
    "The heart is normal in size. The lungs are clear.",
    "The heart is enlarged. X-ray shows a small left effusion.",
    "The lungs are clear. No effusion. No pneumothorax at T11.",
] * 3 + ["Rare words appear twice.", "Rare words appear once more."]
REPORTS = [clean_report(report) for report in RAW_REPORTS]


@pytest.fixture(scope="module")
def tokenizer():
    return build_report_tokenizer(REPORTS, min_frequency=3, model_max_length=12)


def test_special_tokens(tokenizer):
    ids = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id]
    assert ids == [0, 1, 2, 3]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    assert tokenizer("").input_ids == [1, 2]


def test_vocabulary_is_words_at_min_frequency_by_count_then_alphabet(tokenizer):
    counts = Counter(word for report in REPORTS for word in report.split())
    kept = sorted((word for word, count in counts.items() if count >= 3), key=lambda word: (-counts[word], word))
    vocab = tokenizer.get_vocab()
    assert sorted(vocab, key=vocab.get) == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + kept
    assert "x-ray" in vocab and "t11" in vocab  # whitespace split, as R2Gen's report.split()
    assert "rare" not in vocab and counts["rare"] == 2


def test_deterministic_across_builds():
    first = build_report_tokenizer(REPORTS)
    second = build_report_tokenizer(iter(reversed(REPORTS)))
    assert first.get_vocab() == second.get_vocab()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_encode_decode(tokenizer):
    report = REPORTS[1]
    assert report == "the heart is enlarged . x-ray shows a small left effusion ."
    ids = tokenizer(report).input_ids
    assert ids[0] == 1 and ids[-1] == 2 and 3 not in ids
    assert len(ids) == len(report.split()) + 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == report
    assert tokenizer.decode(ids) == f"[BOS] {report} [EOS]"
    assert tokenizer(report.upper()).input_ids == ids


def test_rare_and_unseen_words_map_to_unk(tokenizer):
    ids = tokenizer("rare words appear . pneumonia").input_ids
    assert ids == [1, 3, 3, 3, tokenizer.convert_tokens_to_ids("."), 3, 2]


def test_truncation_keeps_eos(tokenizer):
    long_report = " ".join(REPORTS)
    for max_length in (3, 5, 8):
        ids = tokenizer(long_report, truncation=True, max_length=max_length).input_ids
        assert len(ids) == max_length
        assert ids[0] == 1 and ids[-1] == 2
        assert ids[1:-1] == tokenizer(long_report).input_ids[1 : max_length - 1]
    default = tokenizer(long_report, truncation=True).input_ids  # model_max_length
    assert len(default) == 12 and default[-1] == 2


def test_padding(tokenizer):
    batch = tokenizer(["the heart", REPORTS[0]], padding=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, len(REPORTS[0].split()) + 2)
    assert batch.input_ids[0, 4:].eq(0).all() and batch.attention_mask[0].tolist()[:5] == [1, 1, 1, 1, 0]


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = REPORTS + ["unseen words . the heart"]
    assert loaded(texts).input_ids == tokenizer(texts).input_ids
    truncated = loaded(texts, truncation=True, max_length=6).input_ids
    assert truncated == tokenizer(texts, truncation=True, max_length=6).input_ids
    assert all(ids[-1] == 2 for ids in truncated)
    assert loaded.model_max_length == 12
    assert [loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id] == [0, 1, 2, 3]
    assert loaded.decode(tokenizer(REPORTS[0]).input_ids, skip_special_tokens=True) == REPORTS[0]


def test_bad_input():
    with pytest.raises(ValueError, match="no reports"):
        build_report_tokenizer([])
    with pytest.raises(ValueError, match="no reports"):
        build_report_tokenizer(iter(()))
    with pytest.raises(TypeError, match="Report 1 must be a str"):
        build_report_tokenizer(["normal .", None])
