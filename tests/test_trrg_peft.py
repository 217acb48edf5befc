"""TRRG with peft LoRA on the LLM, bitsandbytes 4-bit/8-bit loading on CPU, and TRL's SFTTrainer."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from PIL import Image
from test_trrg_common import (
    CLUE_ID,
    IMAGE_ID,
    IMAGE_SIZE,
    build_tokenizer,
    pixels,
    prompt_ids,
    text_config,
    trrg_config,
)
from transformers import BitsAndBytesConfig

from cxrgen.compat import CHECKPOINTING_ARGUMENT
from cxrgen.modeling.trrg.modeling_trrg import TrrgForConditionalGeneration

pytestmark = pytest.mark.transformers_compat

TEXT = [10, 11, 12, 13]


def make_model(arch="llama", hidden=32):
    torch.manual_seed(0)
    return TrrgForConditionalGeneration(trrg_config(arch, text_config=text_config(arch, hidden=hidden)))


def lora(model, r=4):
    return LoraConfig(
        r=r,
        lora_alpha=8,
        target_modules=model.lora_target_modules(),
        modules_to_save=list(model.lora_trainable_modules),
        task_type="CAUSAL_LM",
    )


def batch(model, size=2):
    ids = prompt_ids(model.config, TEXT, batch=size)
    labels = ids.masked_fill((ids == IMAGE_ID) | (ids == CLUE_ID), -100)
    return {"input_ids": ids, "pixel_values": pixels(size), "labels": labels}


def train_steps(model, inputs, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("arch, targets", [("llama", 4), ("qwen2", 4), ("gpt2", 2)])
def test_lora_adapts_only_llm_attention_and_counts_trainable_parameters(arch, targets):
    model = make_model(arch)
    full = sum(p.numel() for name in model.lora_trainable_modules for p in getattr(model.model, name).parameters())
    peft_model = get_peft_model(model, lora(model, r=4))
    adapted = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
    assert len(adapted) == targets * 2  # two LLM layers
    assert all(".language_model." in name and "mlp" not in name for name in adapted)
    # r * (in + out) per adapted layer (Linear stores (out, in), gpt2's Conv1D (in, out))
    lora_params = sum(4 * sum(peft_model.get_submodule(name).base_layer.weight.shape) for name in adapted)
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable == lora_params + full
    frozen = ("vision_tower", "zero_shot_head", "lm_head")
    for name, parameter in peft_model.named_parameters():
        if any(part in name for part in frozen) or (".language_model." in name and "lora_" not in name):
            assert not parameter.requires_grad, name


def test_lora_adapters_save_reload_and_merge_identically(tmp_path):
    model = make_model("qwen2")
    peft_model = get_peft_model(model, lora(model))
    inputs = batch(model)
    peft_model.train()
    losses = train_steps(peft_model, inputs)
    assert losses[-1] < losses[0]
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_model("qwen2"), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, TrrgForConditionalGeneration)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-5, rtol=1e-4)
    generate = dict(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=4)
    assert torch.equal(merged.generate(**generate), reloaded.generate(**generate))


def _quantized(tmp_path, **quantization):
    # bitsandbytes' CPU 4-bit kernels need in_features >= the 64-wide quantization block
    make_model(hidden=64).save_pretrained(tmp_path / "base")
    skip = list(TrrgForConditionalGeneration.quantization_skip_modules)
    config = BitsAndBytesConfig(llm_int8_skip_modules=skip, **quantization)
    try:
        return TrrgForConditionalGeneration.from_pretrained(
            tmp_path / "base", quantization_config=config, device_map="cpu"
        )
    except (ImportError, RuntimeError) as error:  # bitsandbytes without a usable CPU backend
        if "bitsandbytes" in str(error).lower() and "cpu" in str(error).lower():
            pytest.skip(f"bitsandbytes CPU backend unavailable: {error}")
        raise


def test_4bit_lora_trains_and_generates_on_cpu(tmp_path):
    import bitsandbytes as bnb

    model = _quantized(
        tmp_path,
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_use_double_quant=True,
    )
    llm_linear = model.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(llm_linear, bnb.nn.Linear4bit)
    for prefix in TrrgForConditionalGeneration.quantization_skip_modules:
        module = model.get_submodule(prefix)
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in module.modules()), prefix
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model = get_peft_model(model, lora(model))
    inputs = batch(model)
    peft_model.train()
    losses = train_steps(peft_model, inputs, steps=4)
    assert losses[-1] < losses[0]
    adapter = peft_model.base_model.model.model.language_model.layers[0].self_attn.q_proj
    assert adapter.lora_B["default"].weight.abs().sum() > 0
    peft_model.eval()
    out = peft_model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=4)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)


def test_8bit_loading_keeps_non_llm_modules_and_runs(tmp_path):
    import bitsandbytes as bnb

    model = _quantized(tmp_path, load_in_8bit=True)
    assert isinstance(model.model.language_model.layers[0].mlp.up_proj, bnb.nn.Linear8bitLt)
    assert (
        isinstance(model.model.projector.fc1, torch.nn.Linear)
        and model.model.projector.fc1.weight.dtype == torch.float32
    )
    inputs = batch(model)
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
    reference = make_model(hidden=64).eval()
    with torch.no_grad():
        expected = reference(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
    assert torch.isfinite(logits).all()
    assert torch.corrcoef(torch.stack([logits.flatten(), expected.flatten()]))[0, 1] > 0.9


def test_trl_sft_trainer_trains_with_lora(tmp_path):
    from datasets import Dataset, List
    from datasets import Image as ImageFeature
    from trl import SFTConfig, SFTTrainer

    from cxrgen.processing.image_processing_cxr import CxrImageProcessor
    from cxrgen.processing.processing_trrg import TrrgProcessor

    model = make_model("gpt2")
    processor = TrrgProcessor.for_model(
        model.config, CxrImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), build_tokenizer()
    )
    rng = np.random.default_rng(0)
    rows = []
    for report in ["the heart is normal in size .", "mild cardiomegaly .", "lungs are clear .", "no pneumothorax ."]:
        views = [Image.fromarray(rng.integers(0, 255, (36, 36), dtype=np.uint8)) for _ in range(2)]
        rows.append(
            {
                "images": views,
                "prompt": [
                    {"role": "user", "content": [{"type": "image"}] * 2 + [{"type": "text", "text": "generate"}]}
                ],
                "completion": [{"role": "assistant", "content": [{"type": "text", "text": report}]}],
            }
        )
    dataset = Dataset.from_list(rows)
    dataset = dataset.cast_column("images", List(ImageFeature()))
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        **{CHECKPOINTING_ARGUMENT: False},
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        max_length=None,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, peft_config=lora(model)
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(np.isfinite(losses))
    changed = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in changed) and any("projector" in n for n in changed)
