"""CMCRL (VLCI) on CPU at the paper's IU-Xray size: parameter counts, generation throughput with and without the
KV cache, and one training step's time and peak memory.

    python benchmarks/bench_cmcrl.py [--batch-size 16] [--num-beams 3] [--max-length 60] [--threads 1]
        [--optimizer adamw|adamw_fused] [--bf16] [--gradient-checkpointing] [--profile [--profile-depth 2]]
        [--warmup-steps 2 --train-steps 3] [--allocator cxrgen|system] [--compare-with OTHER_CHECKOUT --repeats 3]

Each measurement runs in its own subprocess so that its peak resident memory (`resource.getrusage` ru_maxrss,
which covers torch's native allocations, unlike tracemalloc) is its own. The model is randomly initialised, so
it never stops early: every study is decoded to `--max-length` tokens (the worst case). Prints one JSON object.

A training measurement runs `--warmup-steps` and then `--train-steps` steps on the same batch: `seconds` is the median
of the timed steps (what each step of a long run costs: the first steps also build oneDNN's kernels and the optimizer
state, and under glibc's defaults malloc's thresholds still move), `first_step_seconds` the first step, and the peak
memory is that of the whole run, optimizer state included.
`--allocator cxrgen` (the default) does what `cxrgen train` and `cxrgen generate` do before they start:
`cxrgen.allocator.keep_freed_memory()`, so that each step reuses the memory the one before freed; `system` keeps
glibc's defaults. A checkout without `cxrgen.allocator` runs with glibc's defaults.

`--profile` adds a per-module table of one training step (after a warm-up step) from the torch profiler: each
module's forward time, and its backward time (the autograd nodes its forward created, matched by sequence number),
plus the optimizer step and the most expensive operators. `--compare-with` times the same parts, with the same settings, with
the `cxrgen` package of another checkout of this repository (e.g. an older commit), alternating the two `--repeats`
times so that both see the same load on a shared machine; it reports every run and the speed-ups (min, median, max).
Times are wall-clock seconds and the process CPU seconds (all threads), which a busy machine disturbs less.
"""

import argparse
import functools
import json
import os
import time
from collections import defaultdict

import torch
from measurement import peak_rss_mib, run_json, spread, timed_steps

from cxrgen.compat import enable_checkpointing
from cxrgen.environment import run_environment
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining

# The reference's 4,347-word mixed vocabulary (<unk> included) plus its id 0 gives 4,348 rows; here the same
# words take 4,346 ids after the four special tokens [PAD] [BOS] [EOS] [UNK].
VOCAB_SIZE = 4350
REFERENCE_PARAMETERS = {"iu-xray": 73.9e6, "mimic-cxr": 95.9e6}


PARTS = ("generate_cache", "generate_no_cache", "train_step", "profile_train_step")


def build(args):
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset("iu-xray", vocab_size=VOCAB_SIZE))
    config = model.config
    pixel_values = torch.randn(args.batch_size, config.num_views, 3, config.image_size, config.image_size)
    return model, pixel_values


def training_step(args, model, pixel_values):
    """A function running one training step (forward, backward, optimizer step) on random labels."""
    model.train()
    if args.gradient_checkpointing:
        enable_checkpointing(model)
    # adamw = the Trainer's default `adamw_torch` (on CPU a loop over the parameters), adamw_fused its `adamw_torch_fused`.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=args.optimizer == "adamw_fused")
    labels = torch.randint(4, VOCAB_SIZE, (args.batch_size, args.max_length))
    labels[:, 0], labels[:, -1] = model.config.bos_token_id, model.config.eos_token_id

    def step():
        with torch.profiler.record_function("forward"), torch.autocast("cpu", torch.bfloat16, enabled=args.bf16):
            loss = model(pixel_values=pixel_values, labels=labels).loss
        with torch.profiler.record_function("backward"):
            loss.backward()
        with torch.profiler.record_function("optimizer"):
            optimizer.step()
            optimizer.zero_grad()
        return loss

    return step


MODULE_PREFIX = "module::"


def profile_training_step(args, model, pixel_values) -> dict:
    """Per-module forward / backward CPU seconds of one training step (after a warm-up step), from the profiler."""
    open_ranges = defaultdict(list)

    def enter(module, inputs, name):
        open_ranges[name].append(torch.profiler.record_function(MODULE_PREFIX + name).__enter__())

    def leave(module, inputs, output, name):
        open_ranges[name].pop().__exit__(None, None, None)

    for name, module in model.named_modules():
        # Depth counts named parts only: "encoder.layers.0" is at depth 2, like "encoder.embeddings".
        if (
            name
            and not isinstance(module, torch.nn.ModuleList)
            and len([part for part in name.split(".") if not part.isdigit()]) <= args.profile_depth
        ):
            module.register_forward_pre_hook(functools.partial(enter, name=name))
            module.register_forward_hook(functools.partial(leave, name=name))
    step = training_step(args, model, pixel_values)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    events = profiler.events()
    forward, backward, owner = defaultdict(float), defaultdict(float), {}
    for event in events:
        if event.name.startswith(MODULE_PREFIX):
            forward[event.name[len(MODULE_PREFIX) :]] += event.cpu_time_total / 1e6
        elif event.sequence_nr >= 0 and not event.name.startswith("autograd::") and event.sequence_nr not in owner:
            # The innermost module whose forward created this autograd node owns its backward.
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith(MODULE_PREFIX):
                parent = parent.cpu_parent
            if parent is not None:
                owner[event.sequence_nr] = parent.name[len(MODULE_PREFIX) :]
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function") and event.sequence_nr in owner:
            parts = owner[event.sequence_nr].split(".")
            for depth in range(1, len(parts) + 1):
                backward[".".join(parts[:depth])] += event.cpu_time_total / 1e6
    phases = {event.name: event.cpu_time_total / 1e6 for event in events if event.name in PHASES}
    operators = sorted(profiler.key_averages(), key=lambda row: -row.self_cpu_time_total)[:15]
    return {
        "phases_cpu_s": {name: round(seconds, 3) for name, seconds in phases.items()},
        "modules_cpu_s": [
            {"module": name, "forward": round(forward[name], 3), "backward": round(backward[name], 3)}
            for name in sorted(forward, key=lambda name: -(forward[name] + backward[name]))
        ],
        "operators_self_cpu_s": {row.key: round(row.self_cpu_time_total / 1e6, 3) for row in operators},
    }


PHASES = ("forward", "backward", "optimizer")


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    model, pixel_values = build(args)
    result = {"rss_after_build_mib": round(peak_rss_mib(), 1), "kept_freed_memory": keeps_freed_memory(args)}
    if args.part == "profile_train_step":
        result.update(profile_training_step(args, model, pixel_values))
        result["peak_rss_mib"] = round(peak_rss_mib(), 1)
        return result
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.part in ("generate_cache", "generate_no_cache"):
        model.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            generated = model.generate(
                pixel_values=pixel_values,
                num_beams=args.num_beams,
                max_length=args.max_length,
                min_length=args.max_length,
                use_cache=args.part == "generate_cache",
            )
        result.update(studies_per_second=round(args.batch_size / (time.perf_counter() - start), 3))
        result.update(generated_length=generated.shape[1])
    else:
        step = training_step(args, model, pixel_values)
        return {**result, **timed_steps(lambda: step().item(), args.warmup_steps, args.train_steps)}
    result.update(seconds=round(time.perf_counter() - start, 2), cpu_seconds=round(time.process_time() - cpu_start, 2))
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return result


def keeps_freed_memory(args) -> bool:
    """Apply `--allocator`: what cxrgen's entry points do to glibc's malloc, where this checkout has it."""
    if args.allocator == "system":
        return False
    try:
        from cxrgen.allocator import keep_freed_memory
    except ImportError:  # a checkout from before cxrgen.allocator
        return False
    return keep_freed_memory()


def vlci_parts(model: CmcrlForConditionalGeneration) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters of the main parts of a VLCI model, by part."""
    return {
        "backbone": list(model.encoder.embeddings.backbone.parameters()),
        "encoder_layers": list(model.encoder.layers.parameters()),
        "vdm_local_sampler": list(model.encoder.local_sampler.parameters()),
        "vdm_global_sampler": list(model.encoder.global_sampler.parameters()),
        "vdm_fusion": list(model.encoder.mediator_fusion.parameters()),
        "decoder_layers": list(model.decoder.layers.parameters()),
        "ldm": list(model.decoder.ldm.parameters()),
        "word_embeddings": [model.decoder.embeddings.word_embeddings.weight],
        "lm_head": list(model.lm_head.parameters()),
    }


def parameter_counts() -> dict:
    counts = {}
    for preset in ("iu-xray", "mimic-cxr"):
        config = CmcrlConfig.from_preset(preset, vocab_size=VOCAB_SIZE)
        with torch.device("meta"):
            vlci = CmcrlForConditionalGeneration(config)
            radcare = CmcrlForPreTraining(config)
        counts[preset] = {
            "vlci": sum(p.numel() for p in vlci.parameters()),
            "vlci_reference": REFERENCE_PARAMETERS[preset],
            "radcare": sum(p.numel() for p in radcare.parameters()),
            "vlci_parts": {name: sum(p.numel() for p in parameters) for name, parameters in vlci_parts(vlci).items()},
        }
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=60)
    # One thread by default: on a small shared machine more threads oversubscribe the cores (4x slower here).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optimizer", choices=("adamw", "adamw_fused"), default="adamw")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (changes results: rounding)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps before the timed ones")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (their median is reported)")
    parser.add_argument("--allocator", choices=("cxrgen", "system"), default="cxrgen", help="see the docstring")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS[:3])
    parser.add_argument("--profile", action="store_true", help="add a per-module profile of a training step")
    parser.add_argument("--profile-depth", type=int, default=2, help="module name depth of the profile table")
    parser.add_argument("--compare-with", help="another checkout of this repository, timed alternately")
    parser.add_argument("--repeats", type=int, default=3, help="alternations with --compare-with")
    parser.add_argument("--part", choices=PARTS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(measure(args)))
        return
    report = {
        **run_environment(torch_threads=args.threads),
        "settings": {"batch_size": args.batch_size, "num_beams": args.num_beams, "max_length": args.max_length},
        "parameters": parameter_counts(),
    }
    report["settings"].update(
        optimizer=args.optimizer,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        warmup_steps=args.warmup_steps,
        train_steps=args.train_steps,
        allocator=args.allocator,
    )
    common = ["--batch-size", str(args.batch_size), "--num-beams", str(args.num_beams)]
    common += ["--max-length", str(args.max_length), "--threads", str(args.threads)]
    options = ["--optimizer", args.optimizer, "--allocator", args.allocator]
    options += ["--warmup-steps", str(args.warmup_steps), "--train-steps", str(args.train_steps)]
    options += ["--bf16"] * args.bf16
    options += ["--gradient-checkpointing"] * args.gradient_checkpointing + [
        "--profile-depth",
        str(args.profile_depth),
    ]
    parts = args.parts + ["profile_train_step"] * args.profile
    if not args.compare_with:
        for part in parts:
            report[part] = run_part(
                os.path.dirname(os.path.dirname(os.path.abspath(__file__))), part, common + options
            )
        print(json.dumps(report, indent=2))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report["compare_with"] = os.path.basename(os.path.abspath(args.compare_with))
    for part in args.parts:
        runs = {"this": [], "other": []}
        for _ in range(args.repeats):
            runs["this"].append(run_part(here, part, common + options))
            runs["other"].append(run_part(args.compare_with, part, common + options))
        ratios = [other["seconds"] / this["seconds"] for this, other in zip(runs["this"], runs["other"])]
        cpu_ratios = [other["cpu_seconds"] / this["cpu_seconds"] for this, other in zip(runs["this"], runs["other"])]
        report[part] = {"runs": runs, "speedup_wall": spread(ratios), "speedup_cpu": spread(cpu_ratios)}
    print(json.dumps(report, indent=2))


def run_part(checkout: str, part: str, arguments: list[str]) -> dict:
    """One measurement in a fresh process importing `cxrgen` from `checkout` (a checkout of this repository)."""
    return run_json(__file__, ["--part", part, *arguments], pythonpath=[checkout])


if __name__ == "__main__":
    main()
