"""cxrgen on the transformers release it runs on: the declared range, the import-time check, the cache rename of
5.24 handled under both names, and no deprecation warnings from our code on the running release."""

import copy
import logging
import subprocess
import sys
import warnings
from importlib.metadata import requires

import pytest
import torch
from packaging.requirements import Requirement
from test_trrg_common import CLUE_ID, IMAGE_ID, pixels, prompt_ids, trrg_config
from transformers import DynamicCache, EncoderDecoderCache, Trainer, TrainingArguments
from transformers.modeling_outputs import CausalLMOutputWithPast

import cxrgen
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.modeling.cmcrl.modeling_cmcrl import CACHE_FIELD as CMCRL_CACHE_FIELD
from cxrgen.modeling.trrg.modeling_trrg import CACHE_FIELD as TRRG_CACHE_FIELD
from cxrgen.modeling.trrg.modeling_trrg import TrrgForConditionalGeneration

pytestmark = pytest.mark.transformers_compat


def test_metadata_declares_the_floor_the_import_checks():
    declared = next(Requirement(r) for r in requires("cxrgen") if Requirement(r).name == "transformers")
    assert str(declared.specifier) == f"<6,>={cxrgen.MIN_TRANSFORMERS_VERSION}"


def test_import_fails_at_once_on_an_older_transformers(tmp_path):
    # importlib.metadata reports the first distribution on sys.path: a stub of an older release placed first.
    stub = tmp_path / "transformers-5.0.0.dist-info"
    stub.mkdir()
    (stub / "METADATA").write_text("Metadata-Version: 2.1\nName: transformers\nVersion: 5.0.0\n")
    completed = subprocess.run(
        [sys.executable, "-c", "import cxrgen"],
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line == (
        f"ImportError: cxrgen needs transformers>={cxrgen.MIN_TRANSFORMERS_VERSION},<6 but transformers 5.0.0 is "
        f"installed: pip install 'transformers>={cxrgen.MIN_TRANSFORMERS_VERSION},<6'"
    )


def test_cache_field_is_the_running_release_name():
    running = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
    assert CMCRL_CACHE_FIELD == TRRG_CACHE_FIELD == running


@pytest.fixture(scope="module")
def cmcrl():
    torch.manual_seed(0)
    return CmcrlForConditionalGeneration(CmcrlConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def trrg():
    torch.manual_seed(0)
    return TrrgForConditionalGeneration(trrg_config("llama")).eval()


def cmcrl_inputs():
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.randn(2, 2, 3, 32, 32, generator=generator),
        "pixel_mask": torch.ones(2, 2, dtype=torch.long),
    }


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_cmcrl_takes_the_cache_under_either_name(cmcrl, name):
    inputs = cmcrl_inputs()
    start = torch.ones(2, 1, dtype=torch.long)
    with torch.no_grad():
        first = cmcrl(**inputs, decoder_input_ids=start, use_cache=True)
        cache = getattr(first, CMCRL_CACHE_FIELD)
        assert isinstance(cache, EncoderDecoderCache) and cache.get_seq_length() == 1
        step = cmcrl(**inputs, decoder_input_ids=torch.full((2, 1), 5), use_cache=True, **{name: cache})
        full = cmcrl(**inputs, decoder_input_ids=torch.tensor([[1, 5], [1, 5]]))
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1])
    with pytest.raises(ValueError, match="not both"):
        cmcrl(**inputs, decoder_input_ids=start, cache=cache, past_key_values=cache)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_trrg_takes_the_cache_under_either_name(trrg, name):
    ids = prompt_ids(trrg.config, [7, 8, 9, 10], batch=2)
    with torch.no_grad():
        first = trrg(input_ids=ids[:, :-1], pixel_values=pixels(2), use_cache=True)
        cache = getattr(first, TRRG_CACHE_FIELD)
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == ids.shape[1] - 1
        step = trrg(input_ids=ids[:, -1:], use_cache=True, **{name: cache})
        full = trrg(input_ids=ids, pixel_values=pixels(2))
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=1e-4, atol=1e-5)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _deprecations(run) -> list[str]:
    """Deprecation notices (Python warnings and transformers log records) emitted while ``run()`` executes."""
    handler = _Records()
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process notices must show here too
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        logger.removeHandler(handler)
    messages = [str(w.message) for w in caught] + handler.messages
    return [m for m in messages if "deprecat" in m.lower()]


def _train_one_step(model, batch, tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        remove_unused_columns=False,
    )
    Trainer(model=model, args=args, train_dataset=[batch], data_collator=lambda rows: rows[0]).train()


def test_cmcrl_forward_generate_and_training_raise_no_deprecation(cmcrl, tmp_path):
    inputs = cmcrl_inputs()
    labels = torch.tensor([[1, 5, 6, 2], [1, 7, 2, -100]])

    def run():
        with torch.no_grad():
            cmcrl(**inputs, labels=labels)
            cmcrl.generate(**inputs, max_length=6, num_beams=1)
            cmcrl.generate(**inputs, max_length=6, num_beams=2)
        _train_one_step(copy.deepcopy(cmcrl).train(), {**inputs, "labels": labels}, tmp_path)

    assert _deprecations(run) == []


def test_trrg_forward_generate_and_training_raise_no_deprecation(trrg, tmp_path):
    ids = prompt_ids(trrg.config, [7, 8, 9, 10], batch=2)
    labels = ids.masked_fill((ids == IMAGE_ID) | (ids == CLUE_ID), -100)

    def run():
        with torch.no_grad():
            trrg(input_ids=ids, pixel_values=pixels(2), labels=labels)
            trrg.generate(input_ids=ids, pixel_values=pixels(2), max_new_tokens=3, do_sample=False)
        _train_one_step(
            copy.deepcopy(trrg).train(), {"input_ids": ids, "pixel_values": pixels(2), "labels": labels}, tmp_path
        )

    assert _deprecations(run) == []


@pytest.mark.skipif(TRRG_CACHE_FIELD != "cache", reason="past_key_values is deprecated from transformers 5.24 on")
def test_the_deprecation_probe_sees_transformers_notices(trrg):
    def run():
        with torch.no_grad():
            trrg.model.language_model(
                input_ids=torch.tensor([[1, 7, 8]]), use_cache=True, past_key_values=DynamicCache()
            )

    assert _deprecations(run)
