"""TRRG speed and memory on CPU: generation throughput and training-step time / peak memory.

Two presets: "tiny" (the test-size model) and "base100m" (Swin-T at 224 px + a ~100M-parameter Llama-style LLM).
Each measurement runs in a fresh process so that the reported peak resident memory (ru_maxrss) belongs to it.
Random weights: the numbers are speed and memory, not report quality.

    python benchmarks/bench_trrg.py                       # both presets, markdown table on stdout
    python benchmarks/bench_trrg.py --presets tiny --threads 2
    python benchmarks/bench_trrg.py --modes decode        # TRRG decoding vs a plain LlamaForCausalLM

The "decode" mode times the new tokens after the prompt: each repetition runs ``generate`` for 1 and for
``NEW_TOKENS`` new tokens, on TRRG and on a ``LlamaForCausalLM`` with TRRG's LLM config and weights given a prompt
of the same length, alternating; a model's decoding rate is ``BATCH * (NEW_TOKENS - 1)`` over the difference of
the two times (prompt, vision and clue work cancel out). Times are the process's CPU time (``time.process_time``),
which other jobs on shared cores inflate less than wall time; run it with one torch thread. It reports both rates
and the TRRG / plain ratio of each repetition (median, min-max).
"""

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import time

PRESETS = {
    "tiny": {
        "vision": dict(image_size=32, patch_size=8, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=2),
        "text": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
        ),
        "trrg": dict(
            num_query_tokens=4,
            interaction_hidden_size=32,
            interaction_layers=1,
            interaction_heads=4,
            projection_dim=16,
        ),
    },
    "base100m": {  # Swin-T vision tower, Llama-style LLM of ~106M parameters
        "vision": dict(
            image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7
        ),
        "text": dict(
            hidden_size=768,
            intermediate_size=2048,
            num_hidden_layers=8,
            num_attention_heads=12,
            num_key_value_heads=12,
            vocab_size=32000,
        ),
        "trrg": dict(
            num_query_tokens=32,
            interaction_hidden_size=768,
            interaction_layers=2,
            interaction_heads=8,
            projection_dim=512,
        ),
    },
}
BATCH, VIEWS, PROMPT_WORDS, REPORT_TOKENS, NEW_TOKENS = 2, 2, 16, 60, 32


def trrg_config(preset, **text_overrides):
    """The TrrgConfig of a preset (random-weight LLM and vision tower); `text_overrides` change the LLM config."""
    from transformers import LlamaConfig, SwinConfig

    from cxrgen.modeling.trrg import TrrgConfig

    spec = PRESETS[preset]
    text = LlamaConfig(
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **{**spec["text"], **text_overrides},
    )
    return TrrgConfig(
        vision_config=SwinConfig(**spec["vision"]), text_config=text, image_token_id=4, clue_token_id=5, **spec["trrg"]
    )


def trrg_inputs(config, batch=BATCH, views=VIEWS):
    """Prompt ids (BOS, image and clue placeholders, PROMPT_WORDS word ids) and random pixel values of a batch."""
    import torch

    prompt = [1] + [4] * config.num_query_tokens + [5] * config.num_clue_tokens + list(range(10, 10 + PROMPT_WORDS))
    size = config.vision_config.image_size
    return torch.tensor([prompt] * batch), torch.randn(batch, views, 3, size, size)


def training_batch(input_ids, pixel_values):
    """A training batch: the prompts followed by REPORT_TOKENS random report tokens, the labels masking the prompts."""
    import torch

    report = torch.randint(10, 100, (input_ids.shape[0], REPORT_TOKENS))
    return {
        "input_ids": torch.cat([input_ids, report], dim=1),
        "labels": torch.cat([torch.full_like(input_ids, -100), report], dim=1),
        "pixel_values": pixel_values,
    }


def _build(preset):
    import torch

    from cxrgen.modeling.trrg import TrrgForConditionalGeneration

    config = trrg_config(preset)
    torch.manual_seed(0)
    model = TrrgForConditionalGeneration(config)
    input_ids, pixel_values = trrg_inputs(config)
    return model, input_ids, pixel_values


def _measure(preset, mode, threads, steps, queue):
    import torch

    torch.set_num_threads(threads)
    model, input_ids, pixel_values = _build(preset)
    llm_params = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    result = {
        "preset": preset,
        "mode": mode,
        "params_total_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "params_llm_m": llm_params / 1e6,
        "rss_after_build_mib": _rss_mib(),
    }
    if mode == "decode":
        result.update(_decode_rates(model, input_ids, pixel_values, steps))
    elif mode == "generate":
        model.eval()
        kwargs = dict(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
        with torch.no_grad():
            model.generate(**{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                model.generate(**kwargs)
                times.append(time.perf_counter() - start)
        result["seconds"] = statistics.median(times)
        result["new_tokens_per_s"] = BATCH * NEW_TOKENS / result["seconds"]
    else:
        if mode == "train_lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=16,
                lora_alpha=32,
                target_modules=model.lora_target_modules(),
                modules_to_save=list(model.lora_trainable_modules),
            )
            model = get_peft_model(model, lora)
        model.train()
        batch = training_batch(input_ids, pixel_values)
        trainable = [p for p in model.parameters() if p.requires_grad]
        result["params_trainable_m"] = sum(p.numel() for p in trainable) / 1e6
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        times = []
        for step in range(steps + 1):
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step:  # the first step allocates optimizer state
                times.append(time.perf_counter() - start)
        result["seconds"] = statistics.median(times)
    result["peak_rss_mib"] = _rss_mib()
    queue.put(result)


def _decode_rates(model, input_ids, pixel_values, steps):
    """TRRG's and a plain Llama's decoding rates (new tokens / s after the prompt) and their ratio per repetition."""
    import torch
    from transformers import LlamaForCausalLM

    model.eval()
    plain = LlamaForCausalLM(model.config.text_config).eval()
    plain.model.load_state_dict(model.model.language_model.state_dict())
    plain.lm_head.load_state_dict(model.lm_head.state_dict())
    # A prompt of the same length without placeholders: ordinary word ids.
    plain_ids = torch.full_like(input_ids, 10)
    systems = {
        "trrg": lambda n: model.generate(**greedy(input_ids, n), pixel_values=pixel_values),
        "plain": lambda n: plain.generate(**greedy(plain_ids, n)),
    }
    rates = {name: [] for name in systems}
    with torch.no_grad():
        for run in systems.values():
            run(2)  # warm-up
        for _ in range(steps):
            for name, run in systems.items():
                start = time.process_time()
                run(1)
                prompt_only = time.process_time() - start
                start = time.process_time()
                run(NEW_TOKENS)
                rates[name].append(BATCH * (NEW_TOKENS - 1) / (time.process_time() - start - prompt_only))
    ratios = [a / b for a, b in zip(rates["trrg"], rates["plain"])]
    return {
        "seconds": BATCH * NEW_TOKENS / statistics.median(rates["trrg"]),
        "new_tokens_per_s": statistics.median(rates["trrg"]),
        "plain_new_tokens_per_s": statistics.median(rates["plain"]),
        "decode_ratio": statistics.median(ratios),
        "decode_ratio_range": (min(ratios), max(ratios)),
    }


def greedy(input_ids, new_tokens):
    """`generate` arguments for exactly `new_tokens` greedy tokens after `input_ids` (all attended)."""
    import torch

    return dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
    )


def _rss_mib():
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(presets, modes, threads, steps):
    """Measure every (preset, mode) pair in its own spawned process; returns one dict per measurement."""
    context = multiprocessing.get_context("spawn")
    results = []
    for preset in presets:
        for mode in modes:
            queue = context.Queue()
            process = context.Process(target=_measure, args=(preset, mode, threads, steps, queue))
            process.start()
            results.append(queue.get())
            process.join()
    return results


def _versions():
    import peft
    import torch
    import transformers

    return (
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}"
    )


def markdown(results, threads):
    lines = [
        f"CPU: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores visible, "
        f"torch threads {threads}; {_versions()}.",
        f"Batch {BATCH} studies x {VIEWS} views; prompt = Q image + 14 clue placeholders + {PROMPT_WORDS} words; "
        f"generation {NEW_TOKENS} new tokens greedy with KV cache; training on {REPORT_TOKENS} report tokens, AdamW.",
        "",
        "| preset | params total (M) | LLM (M) | mode | trainable (M) | median time (s) | new tokens/s "
        "| RSS after build (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    decoded = [r for r in results if r["mode"] == "decode"]
    for r in results:
        if r["mode"] == "decode":
            continue
        trainable = f"{r['params_trainable_m']:.2f}" if "params_trainable_m" in r else "-"
        throughput = f"{r['new_tokens_per_s']:.1f}" if "new_tokens_per_s" in r else "-"
        lines.append(
            f"| {r['preset']} | {r['params_total_m']:.1f} | {r['params_llm_m']:.1f} | {r['mode']} | {trainable} | "
            f"{r['seconds']:.3f} | {throughput} | {r['rss_after_build_mib']:.0f} | {r['peak_rss_mib']:.0f} |"
        )
    if decoded:
        lines += [
            "",
            "| preset | TRRG new tokens/s after the prompt | plain Llama new tokens/s | TRRG / plain: median (min-max) |",
            "|---|---|---|---|",
        ]
        for r in decoded:
            low, high = r["decode_ratio_range"]
            lines.append(
                f"| {r['preset']} | {r['new_tokens_per_s']:.1f} | {r['plain_new_tokens_per_s']:.1f} | "
                f"{r['decode_ratio']:.3f} ({low:.3f}-{high:.3f}) |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["generate", "train_full", "train_lora"],
        choices=["generate", "decode", "train_full", "train_lora"],
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads; more only helps on idle cores")
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--json", action="store_true", help="print raw JSON instead of a markdown table")
    args = parser.parse_args()
    results = run(args.presets, args.modes, args.threads, args.steps)
    print(json.dumps(results, indent=2) if args.json else markdown(results, args.threads))


if __name__ == "__main__":
    main()
