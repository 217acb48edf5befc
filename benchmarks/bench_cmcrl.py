"""CMCRL (VLCI) on CPU at the paper's IU-Xray size: parameter counts, generation throughput with and without the
KV cache, and one training step's time and peak memory.

    python benchmarks/bench_cmcrl.py [--batch-size 16] [--num-beams 3] [--max-length 60] [--threads 1]

Each measurement runs in its own subprocess so that its peak resident memory (`resource.getrusage` ru_maxrss,
which covers torch's native allocations, unlike tracemalloc) is its own. The model is randomly initialised, so
it never stops early: every study is decoded to `--max-length` tokens (the worst case). Prints one JSON object.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
import transformers

from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining

# The reference's 4,347-word mixed vocabulary (<unk> included) plus its id 0 gives 4,348 rows; here the same
# words take 4,346 ids after the four special tokens [PAD] [BOS] [EOS] [UNK].
VOCAB_SIZE = 4350
REFERENCE_PARAMETERS = {"iu-xray": 73.9e6, "mimic-cxr": 95.9e6}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def build(args):
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset("iu-xray", vocab_size=VOCAB_SIZE))
    config = model.config
    pixel_values = torch.randn(args.batch_size, config.num_views, 3, config.image_size, config.image_size)
    return model, pixel_values


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    model, pixel_values = build(args)
    result = {"rss_after_build_mib": round(peak_rss_mib(), 1)}
    if args.part in ("generate_cache", "generate_no_cache"):
        model.eval()
        with torch.inference_mode():
            start = time.perf_counter()
            generated = model.generate(
                pixel_values=pixel_values,
                num_beams=args.num_beams,
                max_length=args.max_length,
                min_length=args.max_length,
                use_cache=args.part == "generate_cache",
            )
            seconds = time.perf_counter() - start
        result.update(
            seconds=round(seconds, 2),
            studies_per_second=round(args.batch_size / seconds, 3),
            generated_length=generated.shape[1],
        )
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        labels = torch.randint(4, VOCAB_SIZE, (args.batch_size, args.max_length))
        labels[:, 0], labels[:, -1] = model.config.bos_token_id, model.config.eos_token_id
        start = time.perf_counter()
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        result.update(seconds=round(time.perf_counter() - start, 2))
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return result


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
            "vlci_parts": {
                "backbone": sum(p.numel() for p in vlci.encoder.embeddings.backbone.parameters()),
                "encoder_layers": sum(p.numel() for p in vlci.encoder.layers.parameters()),
                "vdm_local_sampler": sum(p.numel() for p in vlci.encoder.local_sampler.parameters()),
                "vdm_global_sampler": sum(p.numel() for p in vlci.encoder.global_sampler.parameters()),
                "vdm_fusion": sum(p.numel() for p in vlci.encoder.mediator_fusion.parameters()),
                "decoder_layers": sum(p.numel() for p in vlci.decoder.layers.parameters()),
                "ldm": sum(p.numel() for p in vlci.decoder.ldm.parameters()),
                "word_embeddings": vlci.decoder.embeddings.word_embeddings.weight.numel(),
                "lm_head": sum(p.numel() for p in vlci.lm_head.parameters()),
            },
        }
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=60)
    # One thread by default: on a small shared machine more threads oversubscribe the cores (4x slower here).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", choices=("generate_cache", "generate_no_cache", "train_step"))
    args = parser.parse_args()
    if args.part:
        print(json.dumps(measure(args)))
        return
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "settings": {"batch_size": args.batch_size, "num_beams": args.num_beams, "max_length": args.max_length},
        "parameters": parameter_counts(),
    }
    for part in ("generate_cache", "generate_no_cache", "train_step"):
        command = [
            sys.executable,
            __file__,
            "--part",
            part,
            "--batch-size",
            str(args.batch_size),
            "--num-beams",
            str(args.num_beams),
            "--max-length",
            str(args.max_length),
            "--threads",
            str(args.threads),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        report[part] = json.loads(completed.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
