"""CMCRL (VLCI) here against the official VLCI code, side by side on this machine: beam-search generation and one
training step, each in a fresh process, the two sides alternating.

    python benchmarks/bench_vlci_reference.py --reference PATH [--batch-size 16] [--num-beams 3] [--new-tokens 60]
        [--generate-threads 2 1] [--train-threads 2] [--repeats 2] [--cxrgen-bf16] [--optimizer adamw|adamw_fused]
        [--warmup-steps 2 --train-steps 3] [--allocators both]

PATH is a local copy of the official code (github:WissingChen/VLCI: the folder holding its `models/`, `modules/`,
`utils/` and `config/`). It is imported from there at run time and never copied into this repository; this script
is run by hand, never in CI. Both sides use random weights, the IU-Xray configuration (ResNet-101 C1-C4 at 224 px,
2 views, width 512, 3 + 3 layers, visual and linguistic deconfounding, 4,347 words) and the same batch of random
images; every measured process starts fresh, so its peak resident memory (ru_maxrss) is its own.

Official side: its own `VLCI` model class built from its own `config/iu_xray/vlci.json` (the sections of the file
merged into one dict, as its entry point does), with the batch size, beam size and `max_seq_length` set from the
arguments; its own `forward(images, mode="sample")` (its beam search) for generation; for training its own
`forward(images, targets, mode="train")`, its LM criterion (`utils.loss.compute_lm_loss`), its optimizer builder
(`utils.optimizers.build_optimizer`: Adam with AMSGrad and weight decay, as configured) and the step of its
fine-tuning loop (zero the gradients, backward, clip gradient values at 0.1, optimizer step).

cxrgen side: `benchmarks/bench_cmcrl.py` (the `iu-xray` preset with the vocabulary of that script), parts
`generate_cache` (beam search with the KV cache, `max_length = min_length = new tokens + 1`, the [BOS] included)
and `train_step` (forward + backward + AdamW on labels of `--new-tokens` tokens, [BOS] and [EOS] included, as the
official targets are). `--cxrgen-bf16` adds a third training side, the same step under bfloat16 autocast.

The official code does not run beside this environment as it stands; it is left untouched on disk and these shims,
installed in the official side's process before its modules are imported, make it run:

- **torchvision**: it imports `torchvision.models.resnet101` (and `torchvision.transforms` in its data loader
  module, imported with its `utils` package), but torchvision does not import beside this torch build and must not
  be installed. A stand-in `torchvision` package in `sys.modules` provides `models.resnet101`, a ResNet-101 written
  here in torchvision's layout (the same children in the same order, the same parameter names and shapes, 44.5M
  parameters, torchvision's initialisation), so the official `list(model.children())[:-3]` keeps conv1 ... layer3
  exactly as with torchvision. Its weights are random: `resnet101(True)` asks for ImageNet weights, which are not
  loaded (nothing is downloaded; both sides are random anyway). `transforms` is a placeholder that fails if used
  (the data loader is not used here).
- **einops**: its CoAtNet block (the global sampler of the visual deconfounding) uses `einops.rearrange` and
  `einops.layers.torch.Rearrange`; einops is not installed. The stand-in implements the axis rearrangement those
  patterns need (grouping, ungrouping, transposition, unit axes) with reshape and permute.
- **CUDA**: `Tensor.cuda()` and `Module.cuda()` return their object unchanged, so its `.cuda()` calls (the
  vocabulary index tensor of the linguistic deconfounding, the causal mask of every beam-search step, the token ids
  fed back at every step) keep the tensors on the CPU.
- **NumPy 2**: its 2-D sin-cos position table uses `np.float`, an alias of the built-in `float` that NumPy 2
  removed; the alias is restored in that process.
- **EOS**: its [BOS], [EOS] and padding are all id 0. A forward hook on its output projection (`model.logit`) sets
  the score of id 0 to -inf during generation only, so no beam ends early: every beam runs `--new-tokens` steps.
  The cxrgen side gets the same with `min_length = max_length`.
- Its tokenizer needs the dataset's annotation file; the model reads only `len(tokenizer.idx2token)`, so a stand-in
  with 4,347 entries is passed.

Training: `--warmup-steps` then `--train-steps` steps on the same batch on both sides; `seconds` is the median of the
timed steps (as in bench_cmcrl.py), the peak memory that of the whole run.

Allocator: cxrgen's entry points tell glibc's malloc to keep the memory a step frees for the next step
(`cxrgen.allocator.keep_freed_memory`), which the official code does not. The sides `official` and `cxrgen` run as each
code runs for its users. `--allocators both` adds `official_kept_memory` (the official code after the same
`keep_freed_memory()` call) and `cxrgen_system_allocator` (cxrgen with glibc's defaults), so that the model code can
be compared under one allocator as well.

Prints one JSON object: every run, and per measurement the official / cxrgen ratios of the runs of the same round
(wall time and process CPU time, all threads: min, median, max). A Markdown table goes to stderr.
"""

import argparse
import json
import math
import os
import sys
import time
import types

from measurement import peak_rss_mib, run_json, spread, timed_steps

HERE = os.path.dirname(os.path.abspath(__file__))
OFFICIAL_SIDES = ("official", "official_kept_memory")
OFFICIAL_WORDS = 4347  # the official IU-Xray vocabulary (<unk> included); id 0 is its BOS / EOS / padding


# ----------------------------------------------------------------------------------------------------------------
# Stand-ins for what the official code imports (see the module docstring)


def _fake_torchvision():
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet(nn.Module):
        def __init__(self, blocks, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = self._stage(64, blocks[0], 1)
            self.layer2 = self._stage(128, blocks[1], 2)
            self.layer3 = self._stage(256, blocks[2], 2)
            self.layer4 = self._stage(512, blocks[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

        def _stage(self, planes, count, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * Bottleneck.expansion),
                )
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * Bottleneck.expansion
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, count)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    def resnet101(pretrained=False, progress=True, **kwargs):
        return ResNet([3, 4, 23, 3], **kwargs)  # random weights whatever `pretrained` asks: nothing is downloaded

    def not_provided(name):
        raise AttributeError(f"torchvision.transforms.{name}: not provided by the benchmark's torchvision stand-in")

    package = types.ModuleType("torchvision")
    package.models = types.ModuleType("torchvision.models")
    package.models.resnet101 = resnet101
    package.transforms = types.ModuleType("torchvision.transforms")
    package.transforms.__getattr__ = not_provided
    return {"torchvision": package, "torchvision.models": package.models, "torchvision.transforms": package.transforms}


def _parse_axes(side: str) -> list[list[str]]:
    groups, current = [], None
    for token in side.replace("(", " ( ").replace(")", " ) ").split():
        if token == "(":
            current = []
        elif token == ")":
            groups.append(current)
            current = None
        elif current is not None:
            current.append(token)
        else:
            groups.append([token])
    return groups


def rearrange(tensor, pattern: str, **sizes):
    """einops-style `rearrange` for patterns of named axes, parenthesised groups and unit axes ("1")."""
    left, right = (_parse_axes(side) for side in pattern.split("->"))
    if len(left) != tensor.dim():
        raise ValueError(f"rearrange {pattern!r}: {len(left)} axes for a tensor of shape {tuple(tensor.shape)}")
    sizes = dict(sizes)
    for group, length in zip(left, tensor.shape):
        names = [name for name in group if name != "1"]
        unknown = [name for name in names if name not in sizes]
        if len(unknown) > 1:
            raise ValueError(f"rearrange {pattern!r}: give the size of all but one of {unknown}")
        if unknown:
            sizes[unknown[0]] = length // math.prod(sizes[name] for name in names if name in sizes)
    axes = [name for group in left for name in group if name != "1"]
    order = [name for group in right for name in group if name != "1"]
    moved = tensor.reshape([sizes[name] for name in axes]).permute([axes.index(name) for name in order])
    return moved.reshape([math.prod(sizes[name] for name in group if name != "1") for group in right])


def _fake_einops():
    from torch import nn

    class Rearrange(nn.Module):
        def __init__(self, pattern, **sizes):
            super().__init__()
            self.pattern, self.sizes = pattern, sizes

        def forward(self, x):
            return rearrange(x, self.pattern, **self.sizes)

    package = types.ModuleType("einops")
    package.rearrange = rearrange
    package.layers = types.ModuleType("einops.layers")
    package.layers.torch = types.ModuleType("einops.layers.torch")
    package.layers.torch.Rearrange = Rearrange
    return {"einops": package, "einops.layers": package.layers, "einops.layers.torch": package.layers.torch}


def install_shims(reference: str) -> None:
    import numpy
    import torch

    sys.modules.update(_fake_torchvision())
    sys.modules.update(_fake_einops())
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    if "float" not in numpy.__dict__:
        numpy.float = float
    sys.path.insert(0, os.path.abspath(reference))


def official_config(reference: str, args) -> dict:
    """The official iu_xray configuration, its sections merged as its entry point merges them (`//` comments cut)."""
    with open(os.path.join(reference, "config", "iu_xray", "vlci.json")) as file:
        sections = json.loads("\n".join(line.split("//")[0] for line in file))
    config = {key: value for section in sections.values() for key, value in section.items()}
    config.update(batch_size=args.batch_size, beam_size=args.num_beams, max_seq_length=args.new_tokens)
    return config


class WordList:
    """The official model reads only the size of its tokenizer's vocabulary (ids 1..N; 0 is BOS / EOS / padding)."""

    def __init__(self, words: int):
        self.idx2token = {index: f"w{index}" for index in range(1, words + 1)}
        self.token2idx = {token: index for index, token in self.idx2token.items()}


def measure_official(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    install_shims(args.reference)
    from models.vlci import VLCI
    from utils.loss import compute_lm_loss
    from utils.optimizers import build_optimizer

    config = official_config(args.reference, args)
    torch.manual_seed(0)
    model = VLCI(config, WordList(OFFICIAL_WORDS))
    images = torch.randn(args.batch_size, 2, 3, 224, 224)
    result = {
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "rss_after_build_mib": round(peak_rss_mib(), 1),
    }
    if args.keep_freed_memory:
        from cxrgen.allocator import keep_freed_memory

        result["kept_freed_memory"] = keep_freed_memory()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.official_part == "generate":
        eos = config["eos_idx"]

        def no_eos(module, inputs, logits):
            return logits.index_fill(-1, torch.tensor([eos]), float("-inf"))

        model.logit.register_forward_hook(no_eos)
        model.eval()
        with torch.no_grad():
            sequences = model(images, mode="sample")
        result.update(generated_length=sequences.shape[1], eos_generated=bool((sequences == eos).any()))
    else:
        model.train()
        optimizer = build_optimizer(config, model)
        targets = torch.randint(1, OFFICIAL_WORDS + 1, (args.batch_size, args.new_tokens))
        targets[:, 0] = targets[:, -1] = config["bos_idx"]  # 0 ... 0, as its tokenizer frames a report
        masks = torch.ones_like(targets)

        def step() -> float:
            loss = compute_lm_loss(model(images, targets, mode="train"), targets, masks)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)
            optimizer.step()
            return loss.item()

        return {**result, **timed_steps(step, args.warmup_steps, args.train_steps)}
    result.update(seconds=round(time.perf_counter() - start, 2), cpu_seconds=round(time.process_time() - cpu_start, 2))
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return result


# ----------------------------------------------------------------------------------------------------------------
# The parent: alternate the sides, one fresh process per run


def run_side(side: str, task: str, threads: int, args) -> dict:
    common = ["--batch-size", str(args.batch_size), "--num-beams", str(args.num_beams), "--threads", str(threads)]
    common += ["--warmup-steps", str(args.warmup_steps), "--train-steps", str(args.train_steps)]
    repository = [os.path.dirname(HERE)]
    if side.startswith("official"):
        arguments = ["--reference", args.reference, "--official-part", task, *common]
        arguments += ["--new-tokens", str(args.new_tokens)] + ["--keep-freed-memory"] * (
            side == "official_kept_memory"
        )
        return run_json(__file__, arguments, pythonpath=repository)
    length = args.new_tokens + 1 if task == "generate" else args.new_tokens
    arguments = ["--part", "generate_cache" if task == "generate" else "train_step", *common]
    arguments += ["--max-length", str(length), "--optimizer", args.optimizer] + ["--bf16"] * (side == "cxrgen_bf16")
    arguments += ["--allocator", "system" if side == "cxrgen_system_allocator" else "cxrgen"]
    return run_json(os.path.join(HERE, "bench_cmcrl.py"), arguments, pythonpath=repository)


def compare(task: str, threads: int, sides: list[str], args) -> dict:
    runs = {side: [] for side in sides}
    for round_index in range(args.repeats):
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            runs[side].append(run_side(side, task, threads, args))
            print(f"{task} {threads} threads, round {round_index}, {side}: {runs[side][-1]}", file=sys.stderr)
    result = {"runs": runs}
    for reference in OFFICIAL_SIDES:
        for side in sides:
            if reference in runs and not side.startswith("official"):
                pairs = list(zip(runs[reference], runs[side]))
                result[f"{reference}_over_{side}"] = {
                    "wall": spread([official["seconds"] / ours["seconds"] for official, ours in pairs]),
                    "cpu": spread([official["cpu_seconds"] / ours["cpu_seconds"] for official, ours in pairs]),
                }
    return result


def markdown(report: dict) -> str:
    batch = report["settings"]["batch_size"]
    lines = [
        f"| measurement (batch {batch}) | threads | side | wall s (min-max) | CPU s (min-max) | peak RSS MiB (max) "
        "| official / side, wall: median (min-max) | CPU: median (min-max) | official keeping freed memory / side, "
        "wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, measurement in report["measurements"].items():
        task, threads = name.rsplit("_", 1)
        for side, runs in measurement["runs"].items():
            wall, cpu = spread([r["seconds"] for r in runs], 1), spread([r["cpu_seconds"] for r in runs], 1)
            ratio = measurement.get(f"official_over_{side}")
            ratios = ["", ""] if ratio is None else [f"{r[1]}x ({r[0]}-{r[2]})" for r in (ratio["wall"], ratio["cpu"])]
            kept = measurement.get(f"official_kept_memory_over_{side}")
            ratios.append("" if kept is None else "{1}x ({0}-{2})".format(*kept["wall"]))
            lines.append(
                f"| {task} | {threads.rstrip('t')} | {side} | {wall[1]} ({wall[0]}-{wall[2]}) | {cpu[1]} ({cpu[0]}-"
                f"{cpu[2]}) | {max(r['peak_rss_mib'] for r in runs):,.0f} | {' | '.join(ratios)} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="folder of a local copy of the official VLCI code")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=60, help="generated tokens; also the training label length")
    parser.add_argument("--generate-threads", type=int, nargs="*", default=[2, 1])
    parser.add_argument("--train-threads", type=int, nargs="*", default=[2])
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the order of the sides flips every round")
    parser.add_argument("--cxrgen-bf16", action="store_true", help="also time cxrgen's step under bf16 autocast")
    parser.add_argument("--optimizer", choices=("adamw", "adamw_fused"), default="adamw", help="cxrgen side")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps before the timed ones")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (their median is reported)")
    parser.add_argument("--allocators", choices=("own", "both"), default="own", help="see the docstring")
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--official-part", choices=("generate", "train_step"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.reference, "models", "vlci.py")):
        parser.error(f"--reference {args.reference}: no models/vlci.py there (expected a copy of the VLCI code)")
    if args.official_part:
        print(json.dumps(measure_official(args)))
        return
    from cxrgen.environment import run_environment

    report = {
        **run_environment(torch_threads=sorted({*args.generate_threads, *args.train_threads})),
        "settings": {
            key: getattr(args, key)
            for key in (
                "batch_size",
                "num_beams",
                "new_tokens",
                "repeats",
                "optimizer",
                "cxrgen_bf16",
                "warmup_steps",
                "train_steps",
                "allocators",
            )
        },
        "measurements": {},
    }
    both = ["official_kept_memory", "cxrgen_system_allocator"] * (args.allocators == "both")
    for threads in args.generate_threads:
        report["measurements"][f"generate_{threads}t"] = compare(
            "generate", threads, ["official", "cxrgen", *both], args
        )
    for threads in args.train_threads:
        sides = ["official", "cxrgen", *both] + ["cxrgen_bf16"] * args.cxrgen_bf16
        report["measurements"][f"train_step_{threads}t"] = compare("train_step", threads, sides, args)
    print(markdown(report), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
