"""TrrgProcessor: placeholder expansion, padding sides, label masking, EOS under truncation, chat template."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_trrg_common import CLUE_ID, IMAGE_ID, IMAGE_SIZE, REPORT, build_tokenizer, trrg_config
from transformers import AutoProcessor

from cxrgen.modeling.trrg.modeling_trrg import TrrgForConditionalGeneration
from cxrgen.processing.image_processing_cxr import CxrImageProcessor, load_image
from cxrgen.processing.processing_trrg import TrrgProcessor

pytestmark = pytest.mark.transformers_compat

PROMPT = "generate a report for this x-ray"


def image(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48), dtype=np.uint8))


def make_processor(config=None):
    config = config or trrg_config()
    image_processor = CxrImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return TrrgProcessor.for_model(config, image_processor, build_tokenizer(), prompt=PROMPT)


def placeholder_counts(ids):
    return (ids == IMAGE_ID).sum(1).tolist(), (ids == CLUE_ID).sum(1).tolist()


def test_generation_prompts_expand_placeholders_once_per_study_and_pad_left():
    processor = make_processor()
    batch = processor(images=[[image(0), image(1)], [image(2)]])
    assert batch["pixel_values"].shape == (2, 2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["pixel_mask"].tolist() == [[1, 1], [1, 0]]
    assert placeholder_counts(batch["input_ids"]) == ([4, 4], [14, 14])
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == processor.tokenizer.bos_token_id and ids[1:5] == [IMAGE_ID] * 4 and ids[5:19] == [CLUE_ID] * 14
    assert processor.tokenizer.decode(ids[19:]) == PROMPT
    short = processor(images=[image(0)], text=["<s><image> generate"])
    mixed = processor(images=[image(0), image(1)], text=["<s><image> generate", "<s><image>" + PROMPT])
    assert mixed["attention_mask"][0].tolist()[0] == 0 and mixed["attention_mask"][0].tolist()[-1] == 1
    assert mixed["input_ids"][0, -short["input_ids"].shape[1] :].tolist() == short["input_ids"][0].tolist()


def test_prompt_markers_must_match_the_views():
    processor = make_processor()
    with pytest.raises(ValueError, match=r"one <image> per view .* \[1\] markers for 1 studies with \[2\] views"):
        processor(images=[[image(0), image(1)]], text=["<s><image> generate"])
    with pytest.raises(ValueError, match="no '<nothing>' token"):
        tokenizer = build_tokenizer()
        tokenizer.clue_token = "<nothing>"
        TrrgProcessor(CxrImageProcessor(), tokenizer)
    with pytest.raises(ValueError, match="needs the LLM's tokenizer"):
        TrrgProcessor(CxrImageProcessor())


def test_paths_are_read_with_the_cxr_loader_for_prompts_and_training_batches(tmp_path):
    # ProcessorMixin fetches paths itself; transformers' loader would clip a 16-bit PNG and fail on DICOM.
    from test_image_processing import write_dicom

    pytest.importorskip("pydicom")
    png = tmp_path / "wide16.png"
    Image.fromarray(np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16)).save(png)
    dicom = tmp_path / "view.dcm"
    write_dicom(dicom, np.arange(40 * 48).reshape(40, 48) % 4096)
    processor = make_processor()
    expected = processor.image_processor(images=[[load_image(png), load_image(dicom)]])["pixel_values"]
    assert torch.equal(processor(images=[[str(png), dicom]])["pixel_values"], expected)
    assert torch.equal(processor(images=[[png, str(dicom)]], reports=[REPORT])["pixel_values"], expected)


def test_training_targets_mask_the_prompt_and_keep_eos_under_truncation():
    processor = make_processor()
    reports = [REPORT, "lungs are clear ."]
    batch = processor(images=[[image(0), image(1)], [image(2)]], reports=reports)
    eos = processor.tokenizer.eos_token_id
    prompt_length = 1 + 4 + 14 + len(PROMPT.split())
    for row, report in enumerate(reports):
        labels = batch["labels"][row]
        kept = labels[labels != -100].tolist()
        assert (labels[:prompt_length] == -100).all()
        assert kept == processor.tokenizer(report, add_special_tokens=False)["input_ids"] + [eos]
    assert batch["attention_mask"][1, -1] == 0  # the shorter report is padded on the right
    assert batch["input_ids"][1, -1] == processor.tokenizer.pad_token_id

    truncated = processor(images=[image(0)], reports=[REPORT], max_length=prompt_length + 4)
    labels = truncated["labels"][0]
    assert truncated["input_ids"].shape[1] == prompt_length + 4
    first_words = processor.tokenizer.convert_tokens_to_ids(["the", "heart", "is"])
    assert labels[-1] == eos and labels[labels != -100].tolist() == first_words + [eos]
    with pytest.raises(ValueError, match="no room for the report"):
        processor(images=[image(0)], reports=[REPORT], max_length=prompt_length)
    with pytest.raises(ValueError, match="one report per prompt"):
        processor(images=[image(0)], reports=reports)


def test_chat_template_gives_the_same_prompt_as_the_default():
    processor = make_processor()
    views = [image(0), image(1)]
    content = [{"type": "image", "image": view} for view in views] + [{"type": "text", "text": PROMPT}]
    messages = [{"role": "user", "content": content}]
    chat = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="pt"
    )
    plain = processor(images=[views])
    assert torch.equal(chat["input_ids"], plain["input_ids"])
    torch.testing.assert_close(chat["pixel_values"], plain["pixel_values"])
    full = processor.apply_chat_template(
        messages + [{"role": "assistant", "content": [{"type": "text", "text": REPORT}]}], tokenize=False
    )
    assert full.endswith(PROMPT + " " + REPORT + "</s>")


def test_processor_round_trip_and_model_generation(tmp_path):
    config = trrg_config(clue_selection="topk", clue_top_k=3)
    processor = make_processor(config)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, TrrgProcessor)
    assert (loaded.num_query_tokens, loaded.num_clue_tokens, loaded.prompt) == (4, 3, PROMPT)
    assert loaded.image_processor.size.height == IMAGE_SIZE
    torch.manual_seed(0)
    model = TrrgForConditionalGeneration(config).eval()
    batch = loaded(images=[[image(0), image(1)], [image(2)]])
    generated = model.generate(**batch, max_new_tokens=5)
    reports = loaded.post_process_generation(generated)
    assert reports == loaded.post_process_generation(generated, prompt_length=batch["input_ids"].shape[1])
    assert reports == loaded.post_process_generation(generated[:, batch["input_ids"].shape[1] :], prompt_length=0)
    assert len(reports) == 2 and all(reports) and not any(PROMPT in r for r in reports)
    with pytest.raises(ValueError, match="config expects"):
        TrrgProcessor.for_model(trrg_config(image_token_id=7), CxrImageProcessor(), build_tokenizer())


def test_post_process_generation_drops_the_fixed_length_default_prompt():
    processor = make_processor()
    tokenizer = processor.tokenizer
    reports = [REPORT, "lungs are clear ."]
    for images in ([[image(0), image(1)], [image(2)]], [image(3), image(4)]):  # mixed and single views
        prompts = processor(images=images)["input_ids"]
        continuation = tokenizer(reports, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
        eos = torch.full((2, 1), tokenizer.eos_token_id)
        generated = torch.cat([prompts, continuation, eos], dim=1)  # what generate returns: prompt, then report
        assert processor.post_process_generation(generated) == reports
        assert processor.post_process_generation(generated.tolist(), prompts.shape[1]) == reports
        assert processor.post_process_generation(generated, prompts.shape[1]) == reports
    custom = processor(images=[image(0)], text=["<s><image> generate"])["input_ids"]
    with pytest.raises(ValueError, match="prompt_length=inputs"):
        processor.post_process_generation(torch.cat([custom, continuation[:1]], dim=1))
    with pytest.raises(ValueError, match="default prompt"):
        processor.post_process_generation(continuation)  # report ids alone: say so with prompt_length=0
