"""CUDA figures for both methods (never in CI, which has no GPU): bf16 training throughput, and TRRG with a
7B-shaped Llama in nf4 + LoRA.

    python benchmarks/bench_gpu.py [--parts cmcrl trrg trrg7b] [--steps 10] [--output FILE.json]
    python benchmarks/bench_gpu.py --smoke      # tiny shapes on the CPU: checks the script, measures nothing

Random weights throughout: speed and memory, not report quality. Times are wall-clock seconds between CUDA
synchronisations, the median (and min, max) of `--steps` repetitions after warm-ups; memory is torch's peak
allocation on the GPU (`max_memory_allocated`, and `max_memory_reserved`, which the caching allocator holds).

- **cmcrl**: `CmcrlForConditionalGeneration` at the IU-Xray preset (ResNet-101 C1-C4, 224 px, width 512, 3+3 layers,
  VDM + LDM, vocabulary 4,350), 2 views, 60-token reports. One training step (forward, backward, fused AdamW) in
  float32 and under bf16 autocast at batch 16 (the paper's) and 64, and beam-3 generation of 60 tokens at batch 16.
- **trrg**: `bench_trrg.py`'s base100m preset (Swin-T at 224 px, ~106M-parameter Llama), full fine-tuning at batch
  8 and 32 x 2 views, float32 and bf16 autocast.
- **trrg7b**: the same vision side with a Llama-2-7B-shaped LLM (hidden 4096, 32 layers, 32 heads, MLP 11008,
  vocabulary 32,000), saved once in bf16 and loaded the way a user loads a base model for 4-bit training:
  `from_pretrained(folder, quantization_config=TrrgForConditionalGeneration.nf4_quantization_config(),
  device_map=...)`, then peft's `prepare_model_for_kbit_training` and LoRA r=16 on the LLM's attention projections
  (the trainer's choice). At batch 4 x 2 views: forward, backward and AdamW-step times, peak memory, and greedy
  decoding: new tokens per second after the prompt, from the difference of 1- and 32-token `generate` calls,
  for TRRG in nf4 before LoRA against a plain `LlamaForCausalLM` with the same weights in nf4 and a prompt of the
  same length (the decoding overhead of the vision and clue work), and for the LoRA model.

Prints one JSON object and, with `--output`, writes it there after every part (a part that fails records its
error and the others still run).
"""

import argparse
import functools
import gc
import json
import statistics
import tempfile
import time
import traceback

import torch
from bench_cmcrl import VOCAB_SIZE as CMCRL_VOCAB_SIZE
from bench_trrg import NEW_TOKENS, REPORT_TOKENS, VIEWS, greedy, training_batch, trrg_config, trrg_inputs
from transformers import LlamaForCausalLM

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
# Training at the papers' batch sizes and at four times them (where bf16 pays off once the GPU is kept busy);
# beam generation at the first.
CMCRL_BATCHES, CMCRL_REPORT_TOKENS, CMCRL_BEAMS = (16, 64), 60, 3
TRRG_BATCHES, TRRG_7B_BATCH = (8, 32), 4
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
    """Start a phase's peak memory: what earlier phases left unreachable is collected first, so the peak is its own."""
    gc.collect()
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


def cmcrl_mode(preset: str, device: torch.device, bf16: bool, steps: int, batch: int, generation: bool) -> dict:
    """One CMCRL model's training steps (and beam-3 generation), in float32 or under bf16 autocast."""
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset(preset, vocab_size=CMCRL_VOCAB_SIZE)).to(device)
    config = model.config
    pixel_values = torch.randn(batch, config.num_views, 3, config.image_size, config.image_size, device=device)
    labels = torch.randint(4, CMCRL_VOCAB_SIZE, (batch, CMCRL_REPORT_TOKENS), device=device)
    labels[:, 0], labels[:, -1] = config.bos_token_id, config.eos_token_id
    train = training_steps(model, {"pixel_values": pixel_values, "labels": labels}, device, bf16, steps)
    train["studies_per_s"] = round(batch / train["step"]["median_s"], 2)
    result = {"train": train, "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    if not generation:
        return result
    model.eval()
    generate = functools.partial(
        model.generate,
        pixel_values=pixel_values,
        num_beams=CMCRL_BEAMS,
        max_length=CMCRL_REPORT_TOKENS,
        min_length=CMCRL_REPORT_TOKENS,
    )
    times = []
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        timed(device, generate)  # the first call builds the kernels
        for _ in range(max(1, steps // 3)):
            seconds, tokens = timed(device, generate)
            times.append(seconds)
    result["generate_beam3"] = {**summary(times), "tokens": list(tokens.shape)}
    return result


def cmcrl(device: torch.device, steps: int, smoke: bool) -> dict:
    """CMCRL training step and beam generation at the IU-Xray preset, float32 and bf16 autocast."""
    preset = "tiny" if smoke else "iu-xray"
    result = {"preset": preset, "views": 2, "report_tokens": CMCRL_REPORT_TOKENS}
    for batch in CMCRL_BATCHES:
        modes = {
            mode: cmcrl_mode(preset, device, mode == "bf16_autocast", steps, batch, batch == CMCRL_BATCHES[0])
            for mode in ("float32", "bf16_autocast")
        }
        result[f"batch{batch}"] = {**modes, "bf16_speedup_train": bf16_speedup(modes)}
    return result


def bf16_speedup(modes: dict) -> float:
    return round(
        modes["float32"]["train"]["step"]["median_s"] / modes["bf16_autocast"]["train"]["step"]["median_s"], 2
    )


def trrg_batch(config, batch: int, device: torch.device) -> dict:
    """`bench_trrg.training_batch` of `batch` studies of VIEWS views, on `device`."""
    return {key: value.to(device) for key, value in training_batch(*trrg_inputs(config, batch, VIEWS)).items()}


def trrg(device: torch.device, steps: int, smoke: bool) -> dict:
    """TRRG full fine-tuning at the base100m preset, float32 and bf16 autocast."""
    preset = "tiny" if smoke else "base100m"
    config = trrg_config(preset)
    result = {"preset": preset, "views": VIEWS, "report_tokens": REPORT_TOKENS}
    for batch in TRRG_BATCHES:
        modes = {}
        for mode in ("float32", "bf16_autocast"):
            torch.manual_seed(0)
            model = TrrgForConditionalGeneration(config).to(device)
            train = training_steps(model, trrg_batch(config, batch, device), device, mode == "bf16_autocast", steps)
            train["studies_per_s"] = round(batch / train["step"]["median_s"], 2)
            parameters = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
            modes[mode] = {"train": train, "parameters_m": parameters}
        result[f"batch{batch}"] = {**modes, "bf16_speedup_train": bf16_speedup(modes)}
    return result


def decode_rate(model, input_ids, pixel_values, device: torch.device, repeats: int) -> dict:
    """Greedy new tokens per second after the prompt: 1- and NEW_TOKENS-token calls, their difference."""
    images = {} if pixel_values is None else {"pixel_values": pixel_values}

    def generate(new_tokens):
        return model.generate(**greedy(input_ids, new_tokens), **images)

    rates, full = [], []
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16):
        generate(2)  # warm-up
        for _ in range(repeats):
            prompt_only, _ = timed(device, functools.partial(generate, 1))
            seconds, tokens = timed(device, functools.partial(generate, NEW_TOKENS))
            rates.append(input_ids.shape[0] * (NEW_TOKENS - 1) / (seconds - prompt_only))
            full.append(seconds)
    return {
        "new_tokens": NEW_TOKENS,
        "generate_s": summary(full),
        "new_tokens_per_s_after_prompt": round(statistics.median(rates), 1),
        "output_shape": list(tokens.shape),
    }


def save_random_models(device: torch.device, config, trrg_folder: str, llama_folder: str) -> dict:
    """A random-weight TRRG in bf16, initialised on `device` (7B float32 weights would take minutes on a CPU), and a
    plain LlamaForCausalLM holding its LLM and lm_head weights, each saved; build and save seconds."""
    torch.manual_seed(0)
    with torch.device(device):
        seconds, model = timed(device, lambda: TrrgForConditionalGeneration(config).to(torch.bfloat16))
        plain = LlamaForCausalLM(config.text_config).to(torch.bfloat16)
    plain.model.load_state_dict(model.model.language_model.state_dict())
    plain.lm_head.load_state_dict(model.lm_head.state_dict())
    result = {"build_s": round(seconds, 1), "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3)}
    result["save_s"] = round(timed(device, functools.partial(model.save_pretrained, trrg_folder))[0], 1)
    plain.save_pretrained(llama_folder)
    return result


def trrg7b(device: torch.device, steps: int, smoke: bool) -> dict:
    """A 7B-shaped TRRG loaded in nf4: decoding against a plain nf4 Llama with the same weights; with LoRA, step
    phases, peak memory and decoding at batch 4."""
    import bitsandbytes
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    # bitsandbytes' CPU kernels need rows of at least one 64-value block.
    config = (
        trrg_config("tiny", hidden_size=128, intermediate_size=256) if smoke else trrg_config("base100m", **LLAMA_7B)
    )
    result = {"llm": "tiny" if smoke else "llama-7b-shaped", "batch": TRRG_7B_BATCH, "views": VIEWS}
    # bitsandbytes' CPU kernels (the smoke run) compute in float32.
    quantization = TrrgForConditionalGeneration.nf4_quantization_config(
        torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    batch = trrg_batch(config, TRRG_7B_BATCH, device)
    prompt_ids = batch["input_ids"][:, :-REPORT_TOKENS]
    repeats = max(1, steps // 3)
    with tempfile.TemporaryDirectory() as trrg_folder, tempfile.TemporaryDirectory() as llama_folder:
        result.update(save_random_models(device, config, trrg_folder, llama_folder))
        reset_peak_memory(device)
        load = functools.partial(
            TrrgForConditionalGeneration.from_pretrained,
            trrg_folder,
            quantization_config=quantization,
            device_map={"": device},
        )
        seconds, model = timed(device, load)
        result["load_nf4_s"] = round(seconds, 1)
        result["nf4_linear_layers"] = sum(isinstance(module, bitsandbytes.nn.Linear4bit) for module in model.modules())
        result["memory_footprint_gib"] = round(model.get_memory_footprint() / 2**30, 3)
        result["after_load"] = peak_memory(device)
        plain = LlamaForCausalLM.from_pretrained(
            llama_folder, quantization_config=quantization, device_map={"": device}
        )
    # The plain model's prompt has the same length, in ordinary word ids.
    result["decode_nf4"] = {
        "trrg": decode_rate(model.eval(), prompt_ids, batch["pixel_values"], device, repeats),
        "plain_llama": decode_rate(plain.eval(), torch.full_like(prompt_ids, 10), None, device, repeats),
    }
    rates = {name: rate["new_tokens_per_s_after_prompt"] for name, rate in result["decode_nf4"].items()}
    result["decode_nf4"]["trrg_over_plain"] = round(rates["trrg"] / rates["plain_llama"], 3)
    del plain
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
    result["train_bf16"] = training_steps(model, batch, device, True, steps)
    reset_peak_memory(device)
    result["generate_greedy_lora"] = decode_rate(model.eval(), prompt_ids, batch["pixel_values"], device, repeats)
    result["generate_greedy_lora"].update(peak_memory(device))
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
