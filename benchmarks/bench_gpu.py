"""CUDA figures for both methods (never in CI, which has no GPU): bf16 training throughput, and TRRG with a
7B-shaped Llama in nf4 + LoRA.

    python benchmarks/bench_gpu.py [--parts cmcrl trrg trrg7b] [--steps 10] [--output FILE.json]
    python benchmarks/bench_gpu.py --smoke      # tiny shapes on the CPU: checks the script, measures nothing

Random weights throughout: speed and memory, not report quality. Times are wall-clock seconds between CUDA
synchronisations, the median (and min, max) of `--steps` repetitions after warm-ups; memory is torch's peak
allocation on the GPU (`max_memory_allocated`, and `max_memory_reserved`, which the caching allocator holds).

- **cmcrl**: `CmcrlForConditionalGeneration` at the IU-Xray preset (ResNet-101 C1-C4, 224 px, width 512, 3+3 layers,
  VDM + LDM, vocabulary 4,350), batch 16 studies x 2 views, 60-token reports. One training step (forward, backward,
  fused AdamW) in float32 and under bf16 autocast, and beam-3 generation of 60 tokens for the same batch in each.
- **trrg**: `bench_trrg.py`'s base100m preset (Swin-T at 224 px, ~106M-parameter Llama), full fine-tuning at batch
  8 x 2 views, float32 and bf16 autocast.
- **trrg7b**: the same vision side with a Llama-2-7B-shaped LLM (hidden 4096, 32 layers, 32 heads, MLP 11008,
  vocabulary 32,000), saved once in bf16 and loaded the way a user loads a base model for 4-bit training:
  `from_pretrained(folder, quantization_config=TrrgForConditionalGeneration.nf4_quantization_config(),
  device_map=...)`, then peft's `prepare_model_for_kbit_training` and LoRA r=16 on the LLM's attention projections
  (the trainer's choice). At batch 4 x 2 views: forward, backward and AdamW-step times, peak memory, and greedy
  decoding: new tokens per second after the prompt, from the difference of 1- and 32-token `generate` calls.

Prints one JSON object and, with `--output`, writes it there after every part (a part that fails records its
error and the others still run).
"""

import argparse
import functools
import json
import statistics
import tempfile
import time
import traceback

import torch
from bench_cmcrl import VOCAB_SIZE as CMCRL_VOCAB_SIZE
from bench_trrg import NEW_TOKENS, REPORT_TOKENS, VIEWS, trrg_config, trrg_inputs

from cxrgen.environment import run_environment
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.modeling.trrg import TrrgForConditionalGeneration

LLAMA_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
)
CMCRL_BATCH, CMCRL_REPORT_TOKENS, CMCRL_BEAMS = 16, 60, 3
TRRG_BATCH, TRRG_7B_BATCH = 8, 4
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function) -> tuple[float, object]:
    """(seconds, result) of `function()`, the GPU's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def summary(seconds: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(seconds), 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 3),
    }


def training_steps(model, batch: dict, device: torch.device, bf16: bool, steps: int, warmup: int = 2) -> dict:
    """Forward / backward / AdamW-step times of `steps` training steps after `warmup` ones, and their peak memory."""
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    phases = {"forward": [], "backward": [], "optimizer": [], "step": []}
    losses = []
    reset_peak_memory(device)
    for step in range(warmup + steps):
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            forward, loss = timed(device, lambda: model(**batch).loss)
        backward, _ = timed(device, loss.backward)
        update, _ = timed(device, lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))
        if step >= warmup:
            for name, seconds in zip(phases, (forward, backward, update, forward + backward + update)):
                phases[name].append(seconds)
        losses.append(round(loss.item(), 4))
    result = {name: summary(seconds) for name, seconds in phases.items()}
    result["losses"] = losses
    result.update(peak_memory(device))
    return result


def cmcrl_mode(preset: str, device: torch.device, bf16: bool, steps: int) -> dict:
    """One CMCRL model's training steps and beam-3 generation, in float32 or under bf16 autocast."""
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset(preset, vocab_size=CMCRL_VOCAB_SIZE)).to(device)
    config = model.config
    pixel_values = torch.randn(CMCRL_BATCH, config.num_views, 3, config.image_size, config.image_size, device=device)
    labels = torch.randint(4, CMCRL_VOCAB_SIZE, (CMCRL_BATCH, CMCRL_REPORT_TOKENS), device=device)
    labels[:, 0], labels[:, -1] = config.bos_token_id, config.eos_token_id
    train = training_steps(model, {"pixel_values": pixel_values, "labels": labels}, device, bf16, steps)
    train["studies_per_s"] = round(CMCRL_BATCH / train["step"]["median_s"], 2)
    model.eval()
    generate = functools.partial(
        model.generate,
        pixel_values=pixel_values,
        num_beams=CMCRL_BEAMS,
        max_length=CMCRL_REPORT_TOKENS,
        min_length=CMCRL_REPORT_TOKENS,
    )
    generation = []
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        timed(device, generate)  # the first call builds the kernels
        for _ in range(max(1, steps // 3)):
            seconds, tokens = timed(device, generate)
            generation.append(seconds)
    return {
        "train": train,
        "generate_beam3": {**summary(generation), "tokens": list(tokens.shape)},
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }


def cmcrl(device: torch.device, steps: int, smoke: bool) -> dict:
    """CMCRL training step and beam generation at the IU-Xray preset, float32 and bf16 autocast."""
    preset = "tiny" if smoke else "iu-xray"
    result = {"preset": preset, "batch": CMCRL_BATCH, "views": 2, "report_tokens": CMCRL_REPORT_TOKENS}
    for mode in ("float32", "bf16_autocast"):
        result[mode] = cmcrl_mode(preset, device, mode == "bf16_autocast", steps)
    result["bf16_speedup_train"] = round(
        result["float32"]["train"]["step"]["median_s"] / result["bf16_autocast"]["train"]["step"]["median_s"], 2
    )
    return result


def trrg_batch(config, batch: int, device: torch.device) -> dict:
    """A training batch: the prompt masked out of the labels, REPORT_TOKENS random report tokens."""
    input_ids, pixel_values = trrg_inputs(config, batch, VIEWS)
    report = torch.randint(10, 100, (batch, REPORT_TOKENS))
    return {
        "input_ids": torch.cat([input_ids, report], dim=1).to(device),
        "labels": torch.cat([torch.full_like(input_ids, -100), report], dim=1).to(device),
        "pixel_values": pixel_values.to(device),
    }


def trrg(device: torch.device, steps: int, smoke: bool) -> dict:
    """TRRG full fine-tuning at the base100m preset, float32 and bf16 autocast."""
    preset = "tiny" if smoke else "base100m"
    config = trrg_config(preset)
    result = {"preset": preset, "batch": TRRG_BATCH, "views": VIEWS, "report_tokens": REPORT_TOKENS}
    for mode in ("float32", "bf16_autocast"):
        torch.manual_seed(0)
        model = TrrgForConditionalGeneration(config).to(device)
        batch = trrg_batch(config, TRRG_BATCH, device)
        train = training_steps(model, batch, device, mode == "bf16_autocast", steps)
        train["studies_per_s"] = round(TRRG_BATCH / train["step"]["median_s"], 2)
        result[mode] = {"train": train, "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
        del model
    result["bf16_speedup_train"] = round(
        result["float32"]["train"]["step"]["median_s"] / result["bf16_autocast"]["train"]["step"]["median_s"], 2
    )
    return result


def decode_rate(model, input_ids, pixel_values, device: torch.device, repeats: int) -> dict:
    """Greedy new tokens per second after the prompt: 1- and NEW_TOKENS-token calls, their difference."""

    def generate(new_tokens):
        return model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=pixel_values,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )

    rates, full = [], []
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16):
        generate(2)  # warm-up
        for _ in range(repeats):
            prompt_only, _ = timed(device, lambda: generate(1))
            seconds, tokens = timed(device, lambda: generate(NEW_TOKENS))
            rates.append(input_ids.shape[0] * (NEW_TOKENS - 1) / (seconds - prompt_only))
            full.append(seconds)
    return {
        "new_tokens": NEW_TOKENS,
        "generate_s": summary(full),
        "new_tokens_per_s_after_prompt": round(statistics.median(rates), 1),
        "output_shape": list(tokens.shape),
    }


def build_on(device: torch.device, config) -> TrrgForConditionalGeneration:
    """A random-weight bf16 model, initialised on `device` (7B float32 weights would take minutes on a CPU)."""
    with torch.device(device):
        return TrrgForConditionalGeneration(config).to(torch.bfloat16)


def trrg7b(device: torch.device, steps: int, smoke: bool) -> dict:
    """A 7B-shaped TRRG loaded in nf4 with LoRA: step phases, peak memory and decoding at batch 4."""
    import bitsandbytes
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    # bitsandbytes' CPU kernels need rows of at least one 64-value block.
    config = (
        trrg_config("tiny", hidden_size=128, intermediate_size=256) if smoke else trrg_config("base100m", **LLAMA_7B)
    )
    result = {"llm": "tiny" if smoke else "llama-7b-shaped", "batch": TRRG_7B_BATCH, "views": VIEWS}
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        seconds, model = timed(device, lambda: build_on(device, config))
        result["build_s"] = round(seconds, 1)
        result["parameters_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
        result["save_s"] = round(timed(device, lambda: model.save_pretrained(folder))[0], 1)
        del model
        reset_peak_memory(device)
        # bitsandbytes' CPU kernels (the smoke run) compute in float32.
        compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        quantization = TrrgForConditionalGeneration.nf4_quantization_config(compute_dtype)
        seconds, model = timed(
            device,
            lambda: TrrgForConditionalGeneration.from_pretrained(
                folder, quantization_config=quantization, device_map={"": device}
            ),
        )
    result["load_nf4_s"] = round(seconds, 1)
    result["nf4_linear_layers"] = sum(isinstance(module, bitsandbytes.nn.Linear4bit) for module in model.modules())
    result["memory_footprint_gib"] = round(model.get_memory_footprint() / 2**30, 3)
    result["after_load"] = peak_memory(device)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        **LORA,
        target_modules=model.lora_target_modules(),
        modules_to_save=list(model.lora_trainable_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    result["lora"] = LORA
    result["trainable_parameters_m"] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)
    batch = trrg_batch(config, TRRG_7B_BATCH, device)
    result["train_bf16"] = training_steps(model, batch, device, True, steps)
    model.eval()
    reset_peak_memory(device)
    prompt = {"input_ids": batch["input_ids"][:, :-REPORT_TOKENS], "pixel_values": batch["pixel_values"]}
    result["generate_greedy"] = decode_rate(
        model, prompt["input_ids"], prompt["pixel_values"], device, max(1, steps // 3)
    )
    result["generate_greedy"].update(peak_memory(device))
    return result


PARTS = {"cmcrl": cmcrl, "trrg": trrg, "trrg7b": trrg7b}


def device_description(device: torch.device) -> dict:
    import bitsandbytes
    import peft

    description = {"device": str(device), "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__}
    if device.type == "cuda":
        description.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions (median reported)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script")
    parser.add_argument("--output", help="also write the JSON here, after every part")
    args = parser.parse_args()
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        parser.error("no CUDA device: this benchmark measures the GPU (--smoke checks the script on the CPU)")
    results = {"environment": {**run_environment(), **device_description(device)}, "steps": args.steps}
    for name in args.parts:
        try:
            seconds, results[name] = timed(device, functools.partial(PARTS[name], device, args.steps, args.smoke))
            results[name]["part_wall_s"] = round(seconds, 1)
        except Exception:  # a benchmark run on a lent machine: keep the other parts' figures
            results[name] = {"error": traceback.format_exc()[-3000:]}
        if args.output:
            with open(args.output, "w") as file:
                json.dump(results, file, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
