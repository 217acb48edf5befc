"""bfloat16 autocast against float32 for the CMCRL (VLCI) training step at the IU-Xray size: its accuracy effect on
the loss and the gradients, and its speed-up, both measured in one process on the same model and batch.

    python benchmarks/bench_bf16.py [--batch-size 16] [--threads 2] [--repeats 3] [--max-length 60] [--float64]
        [--dropout off|same-seed] [--skip-speed]

Accuracy: one forward + backward in each mode on the same weights, the same batch and the same random labels, the
model in training mode (batch norm on batch statistics) and the batch-norm running statistics restored before each
pass. Dropout draws different masks in two passes unless they start from the same random state, and two float32
passes with different masks differ by far more than float rounding; so the dropout modules are switched off
(`--dropout same-seed` keeps them and reseeds the generator before each pass instead). Compared with the float32
pass: a second float32 pass (the measurement's own floor), the bf16 pass, with `--dropout same-seed` a float32
pass with other dropout masks (what a comparison without a shared random state measures), and with `--float64`
the float32 and the bf16 passes against a float64 pass (how well conditioned the gradient is: the error that
float32 rounding leaves in it). Per parameter group (the parts of `bench_cmcrl.vlci_parts`, the rest as "other",
and all): the cosine of the gradients and their relative L2 difference |g - g_ref| / |g_ref|; and the relative
difference of the loss.

Speed: a warm-up step in each mode (oneDNN builds its kernels for new shapes on first use, in both modes), then
`--repeats` rounds of one float32 and one bf16 training step (forward + backward + AdamW), the order flipping every
round, dropout on; per round the float32 / bf16 ratio of wall time and of process CPU time (min, median, max).
Also whether the CPU reports bf16 instructions (AVX512-BF16, AMX). Prints JSON.
"""

import argparse
import json
import sys
import time

import torch
from bench_cmcrl import VOCAB_SIZE, vlci_parts
from measurement import peak_rss_mib, spread

from cxrgen.environment import run_environment
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration


def cpu_bf16_instructions() -> list[str]:
    """The bf16 instruction sets the CPU reports (without them oneDNN emulates bf16 with float32 arithmetic)."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in flags if flag in ("avx512_bf16", "amx_bf16", "amx_tile")]


def loss_and_gradients(model, pixel_values, labels, bf16: bool, seed: int, buffers: dict, float64: bool = False):
    model.load_state_dict(buffers, strict=False)
    model.zero_grad(set_to_none=True)
    if float64:  # float32 -> float64 -> float32 is exact, so the weights come back unchanged
        model.double()
        pixel_values = pixel_values.double()
    torch.manual_seed(seed)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        loss = model(pixel_values=pixel_values, labels=labels).loss
    loss.backward()
    gradients = {name: parameter.grad.detach().double() for name, parameter in model.named_parameters()}
    model.float()
    return loss.item(), gradients


def compare(reference: tuple, other: tuple, groups: dict[str, list[str]]) -> dict:
    (loss32, grads32), (loss, grads) = reference, other
    result = {"loss": loss, "loss_relative_difference": abs(loss - loss32) / abs(loss32), "gradients": {}}
    for group, names in groups.items():
        a = torch.cat([grads32[name].flatten().double() for name in names])
        b = torch.cat([grads[name].flatten().double() for name in names])
        result["gradients"][group] = {
            "cosine": round(torch.nn.functional.cosine_similarity(a, b, dim=0).item(), 6),
            "relative_l2": round(((b - a).norm() / a.norm()).item(), 6),
        }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=60, help="label length, [BOS] and [EOS] included")
    parser.add_argument("--dropout", choices=("off", "same-seed"), default="off")
    parser.add_argument("--float64", action="store_true", help="also compare float32 and bf16 with a float64 pass")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset("iu-xray", vocab_size=VOCAB_SIZE))
    config = model.config
    pixel_values = torch.randn(args.batch_size, config.num_views, 3, config.image_size, config.image_size)
    labels = torch.randint(4, VOCAB_SIZE, (args.batch_size, args.max_length))
    labels[:, 0], labels[:, -1] = config.bos_token_id, config.eos_token_id
    model.train()
    if args.dropout == "off":
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    groups = {part: [names[id(p)] for p in parameters] for part, parameters in vlci_parts(model).items()}
    grouped = {name for group in groups.values() for name in group}
    groups["other"] = [name for name in names.values() if name not in grouped]
    groups["all"] = list(names.values())

    report = {**run_environment(), "cpu_bf16_instructions": cpu_bf16_instructions(), "settings": vars(args)}
    float32 = loss_and_gradients(model, pixel_values, labels, False, 1, buffers)
    report["accuracy"] = {
        "float32_again": compare(float32, loss_and_gradients(model, pixel_values, labels, False, 1, buffers), groups),
        "bf16": compare(float32, loss_and_gradients(model, pixel_values, labels, True, 1, buffers), groups),
    }
    if args.float64:
        float64 = loss_and_gradients(model, pixel_values, labels, False, 1, buffers, float64=True)
        report["accuracy"]["float32_against_float64"] = compare(float64, float32, groups)
        bf16 = loss_and_gradients(model, pixel_values, labels, True, 1, buffers)
        report["accuracy"]["bf16_against_float64"] = compare(float64, bf16, groups)
        del float64, bf16
    # With dropout on, a pass from another random state; with dropout off this would equal float32_again.
    if args.dropout == "same-seed":
        other = loss_and_gradients(model, pixel_values, labels, False, 2, buffers)
        report["accuracy"]["float32_other_dropout_masks"] = compare(float32, other, groups)
    report["float32_loss"] = float32[0]
    del float32
    print(json.dumps(report["accuracy"]), file=sys.stderr, flush=True)
    if args.skip_speed:
        print(json.dumps(report, indent=2))
        return

    model.train()  # dropout on again: the speed is that of a real training step
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(bf16: bool) -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start, time.process_time() - cpu_start

    report["warmup_s"] = {"float32": step(False), "bf16": step(True)}
    runs = {"float32": [], "bf16": []}
    for round_index in range(args.repeats):
        for bf16 in (False, True) if round_index % 2 == 0 else (True, False):
            runs["bf16" if bf16 else "float32"].append(step(bf16))
    report["speed"] = {
        "runs_wall_cpu_s": {
            mode: [[round(t, 2) for t in run] for run in mode_runs] for mode, mode_runs in runs.items()
        },
        "float32_over_bf16_wall": spread([a[0] / b[0] for a, b in zip(runs["float32"], runs["bf16"])]),
        "float32_over_bf16_cpu": spread([a[1] / b[1] for a, b in zip(runs["float32"], runs["bf16"])]),
    }
    report["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
