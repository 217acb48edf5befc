"""The ``cxrgen`` command. Each subcommand parses its arguments and calls the package; no logic lives here.

Errors in what the user gave (files, folders, arguments: ``ValueError`` and file-system errors, which the package
raises with a message naming the file or field) are printed as one message on stderr with exit code 2; ``--debug``
shows their traceback. Anything else is a bug and ends with its traceback and exit code 1.
"""

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

from .allocator import keep_freed_memory
from .methods import DEFAULT_METHOD, METHODS, stage_names

# Raised by the package for bad input, with a message naming the file or field (see the module docstring).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _check_prepared_images(annotation: dict, image_root, skip: bool) -> None:
    from .data.validation import check_images, log_skipped_image_check

    if skip:
        log_skipped_image_check(image_root)
    else:
        check_images(annotation, image_root)


def _prepare(args: argparse.Namespace) -> None:
    from .data.annotation import write_annotation

    if args.dataset == "iu-xray":
        from .data.iu_xray import convert_iu_xray

        annotation = convert_iu_xray(
            reports_source=args.reports, images_dir=args.images, split=args.split, seed=args.seed
        )
        # Without --images the paths are R2Gen's <id>/<view>.png names, whose files are not here to check.
        if args.images is not None:
            _check_prepared_images(annotation, args.images, args.skip_image_check)
        path = write_annotation(annotation, args.output)
    elif args.dataset == "mimic-cxr":
        from .data.mimic_cxr import convert_mimic_cxr

        annotation = convert_mimic_cxr(args.root, all_frontal_images=args.all_frontal)
        _check_prepared_images(annotation, args.root, args.skip_image_check)
        path = write_annotation(annotation, args.output)
    elif args.dataset == "mixed":
        from .data.mixed import prepare_mixed

        path = prepare_mixed(
            args.output,
            {"iu-xray": (args.iu_annotation, args.iu_images), "mimic-cxr": (args.mimic_annotation, args.mimic_images)},
            skip_image_check=args.skip_image_check,
        )
    else:
        from .data.phantom_benchmark import build_phantom_benchmark

        path = build_phantom_benchmark(
            args.output, source=args.source, image_size=args.image_size, max_studies=args.max_studies, seed=args.seed
        )
    print(f"Wrote {path}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation.metrics import evaluate_reports, format_metrics_table
    from .evaluation.predictions import read_predictions

    if args.model is not None:
        _evaluate_model(args)
        return
    for option in ("data", "images", "batch_size", "num_beams", "max_new_tokens"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} is only used with --model, not with --predictions.")
    for option in ("allow_pickle", "skip_image_check"):
        if getattr(args, option):
            raise ValueError(f"--{option.replace('_', '-')} is only used with --model, not with --predictions.")
    records = read_predictions(args.predictions, allow_empty_predictions=args.allow_empty_predictions)
    result = evaluate_reports([r["prediction"] for r in records], [r["reference"] for r in records])
    # The light path: the truncation summary is counted here rather than importing the report module (torch).
    truncated = [record["id"] for record in records if record.get("truncated")]
    result["predictions"] = {"num_truncated": len(truncated), "truncated_ids": truncated}
    print(format_metrics_table(result))
    if truncated:
        print(f"\n{len(truncated)} of {len(records)} predictions were cut at the generation length limit.")
    output = Path(args.output) if args.output else Path(args.predictions).with_suffix(".metrics.json")
    output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"Wrote {output}")


def _evaluate_model(args: argparse.Namespace) -> None:
    from .evaluation.metrics import format_metrics_table
    from .evaluation.report import evaluate_model, truncation_note

    if args.data is None or args.images is None:
        raise ValueError("--model needs --data (annotation.json) and --images (the image root of its paths).")
    if args.allow_empty_predictions:
        raise ValueError("--allow-empty-predictions is only used with --predictions, not with --model.")
    result = evaluate_model(
        args.model,
        args.data,
        args.images,
        split=args.split,
        output_dir=args.output,
        batch_size=args.batch_size or 16,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        allow_pickle=args.allow_pickle,
        skip_image_check=args.skip_image_check,
    )
    print(format_metrics_table(result["metrics"]))
    note = truncation_note(result["metrics"])
    if note:
        print(f"\n{note}")
    for path in result["paths"].values():
        print(f"Wrote {path}")


def _generate(args: argparse.Namespace) -> None:
    from .inference import format_generation, generate_reports, load_generator

    generator = load_generator(args.model, allow_pickle=args.allow_pickle)
    result = generate_reports(generator, [args.images], num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)[
        0
    ]
    print(json.dumps(result, indent=2) if args.json else format_generation(result))


def _push(args: argparse.Namespace) -> None:
    from .hub_cards.publish import push_model_folder

    folder = Path(args.model)
    if folder.is_dir() and not (folder / "README.md").is_file():
        raise ValueError(
            f"{folder} has no model card (README.md). The cxrgen trainers and `cxrgen demo` write one; for another "
            "folder build it with cxrgen.hub_cards.build_model_card(folder, ...) and save it with "
            "cxrgen.hub_cards.save_model_card(card, folder), then push again."
        )
    commit = push_model_folder(folder, args.repo, private=args.private, token=args.token)
    print(f"Pushed {folder} to {args.repo}: {commit.commit_url}")
    if args.space:
        from .app import push_space

        commit = push_space(args.space, args.repo, private=args.private, token=args.token)
        print(f"Pushed the app of {args.repo} to the Space {args.space}: {commit.commit_url}")


def _app(args: argparse.Namespace) -> None:
    from .app import run_app

    run_app(args.model, host=args.host, port=args.port)


def _train(args: argparse.Namespace, trainer_args: list[str]) -> None:
    from .trainers.stage_config import get_stage

    run = get_stage(args.stage)
    output = run(
        args.config,
        args.data,
        args.images,
        args.output,
        resume=args.resume,
        init=args.init,
        trainer_args=trainer_args,
        overwrite=args.overwrite,
        skip_image_check=args.skip_image_check,
        allow_pickle=args.allow_pickle,
        backbone_weights=args.backbone_weights,
    )
    print(f"Wrote {output}")


def _convert(args: argparse.Namespace) -> None:
    from .convert import convert_vlci

    output = convert_vlci(args.checkpoint, args.vocab, args.output, preset=args.preset, repo_id=args.repo_id)
    print(f"Wrote {output}")


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(
        args.output,
        method=args.model,
        source=args.source,
        image_size=args.image_size,
        max_studies=args.max_studies,
        max_steps=args.max_steps,
        num_beams=args.num_beams,
        seed=args.seed,
    )


def _benchmark(args: argparse.Namespace) -> None:
    try:
        from .benchmark import run_benchmark
    except ImportError as error:
        raise ValueError(
            f"cxrgen benchmark needs scikit-learn and matplotlib ({error}): pip install 'cxrgen[benchmark]'"
        ) from error

    ablations = None if args.ablations == "all" else [name for name in args.ablations.split(",") if name != "none"]
    run_benchmark(
        args.output,
        method=args.model,
        seeds=range(args.seeds),
        ablation_seeds=None if args.ablation_seeds is None else range(args.ablation_seeds),
        profile=args.profile,
        ablations=ablations,
        source=args.source,
        max_studies=args.max_studies,
        max_steps=args.max_steps,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cxrgen`` command."""
    names = " or ".join(method.display_name for method in METHODS.values())
    with_findings = ", ".join(method.display_name for method in METHODS.values() if method.structured_findings)
    # Every command takes --debug; argparse only allows an option after the command when its own parser has it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error, not only its message")
    image_check = argparse.ArgumentParser(add_help=False)
    image_check.add_argument(
        "--skip-image-check",
        action="store_true",
        help="do not decode every image before starting (for data checked before; unreadable files then fail late)",
    )
    pickle = argparse.ArgumentParser(add_help=False)
    pickle.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle weights (pytorch_model.bin) when the folder has no safetensors; only for trusted files",
    )
    parser = argparse.ArgumentParser(prog="cxrgen", description="Chest X-ray radiology report generation.")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="build an R2Gen annotation.json (and images for phantom data)")
    datasets = prepare.add_subparsers(dest="dataset", required=True)
    iu = datasets.add_parser(
        "iu-xray",
        help="IU-Xray from the official NLM report archive (R2Gen protocol)",
        parents=[common, image_check],
    )
    iu.add_argument(
        "--reports", help="NLMCXR_reports.tgz or its extracted folder (default: the copy torchxrayvision ships)"
    )
    iu.add_argument("--images", help="the NLM PNG folder; image paths then point at its files")
    iu.add_argument(
        "--split",
        choices=["r2gen", "seeded"],
        default="r2gen",
        help="r2gen: R2Gen's own assignment of studies (default); seeded: a 70/10/20 shuffle by --seed",
    )
    iu.add_argument("--seed", type=int, default=42, help="seed of --split seeded")
    iu.add_argument("--output", required=True, help="annotation.json to write")
    mimic = datasets.add_parser(
        "mimic-cxr", help="MIMIC-CXR-JPG from its official CSVs and report files", parents=[common, image_check]
    )
    mimic.add_argument("--root", required=True, help="folder with the mimic-cxr-2.0.0-*.csv(.gz) files and files/")
    mimic.add_argument("--all-frontal", action="store_true", help="keep every frontal image, not one per study")
    mimic.add_argument("--output", required=True, help="annotation.json to write")
    mixed = datasets.add_parser(
        "mixed",
        help="IU-Xray and MIMIC-CXR annotations as one, for RadCARE pre-training on both (the reference's)",
        description="Merge two prepared annotations into <output>/annotation.json, each study's image paths under "
        "iu-xray/ or mimic-cxr/, and link the two image roots as <output>/images/iu-xray and "
        "<output>/images/mimic-cxr: train with --images <output>/images. Study ids must be distinct.",
        parents=[common, image_check],
    )
    mixed.add_argument("--iu-annotation", required=True, help="the annotation.json of `cxrgen prepare iu-xray`")
    mixed.add_argument("--iu-images", required=True, help="the image root of its paths (the NLM PNG folder)")
    mixed.add_argument("--mimic-annotation", required=True, help="the annotation.json of `cxrgen prepare mimic-cxr`")
    mixed.add_argument("--mimic-images", required=True, help="the image root of its paths (the MIMIC-CXR-JPG folder)")
    mixed.add_argument("--output", required=True, help="folder for annotation.json and images/ (links)")
    phantom = datasets.add_parser(
        "phantom", help="synthetic phantom radiographs with real or templated reports", parents=[common]
    )
    phantom.add_argument("--output", required=True, help="folder for annotation.json and images/")
    phantom.add_argument("--source", choices=["auto", "iu", "synthetic"], default="auto")
    phantom.add_argument("--image-size", type=int, default=224)
    phantom.add_argument("--max-studies", type=int, help="subsample each split proportionally to this many studies")
    phantom.add_argument("--seed", type=int, default=42)
    prepare.set_defaults(handler=_prepare)

    evaluate = commands.add_parser(
        "evaluate",
        help="score reports (NLG and clinical efficacy): a predictions file, or a model run on an annotation split",
        parents=[common, image_check, pickle],
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", help="JSONL with id, prediction, reference per line")
    source.add_argument("--model", help="a saved model folder: generate for --split of --data, then score")
    evaluate.add_argument("--data", help="with --model: the annotation.json to evaluate on")
    evaluate.add_argument("--images", help="with --model: the image root the annotation's paths are relative to")
    evaluate.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="with --model (default: test)"
    )
    evaluate.add_argument("--batch-size", type=int, help="with --model: studies per generate call (default: 16)")
    evaluate.add_argument("--num-beams", type=int, help="with --model: override the model's generation_config")
    evaluate.add_argument("--max-new-tokens", type=int, help="with --model: override the model's generation_config")
    evaluate.add_argument(
        "--output",
        help="with --predictions: the metrics JSON to write (default: next to the predictions); with --model: the "
        "folder for predictions.jsonl, metrics.json, report.md (default: <model>/evaluation-<split>)",
    )
    evaluate.add_argument(
        "--allow-empty-predictions",
        action="store_true",
        help="with --predictions: score an empty prediction (zero overlap) instead of refusing the file",
    )
    evaluate.set_defaults(handler=_evaluate)

    generate = commands.add_parser(
        "generate", help="write the report of one study with a saved model", parents=[common, pickle]
    )
    generate.add_argument("--model", required=True, help=f"a saved {names} model folder")
    generate.add_argument("images", nargs="+", metavar="IMAGE", help="the study's images, frontal first")
    generate.add_argument("--num-beams", type=int, help="override the model's generation_config")
    generate.add_argument("--max-new-tokens", type=int, help="override the model's generation_config")
    generate.add_argument(
        "--json", action="store_true", help=f"print JSON (report; {with_findings}: probabilities and clues)"
    )
    generate.set_defaults(handler=_generate)

    push = commands.add_parser(
        "push", help="publish a saved model folder with its card to the Hugging Face Hub", parents=[common]
    )
    push.add_argument("--model", required=True, help="the model folder (weights, processor, remote code, README.md)")
    push.add_argument("--repo", required=True, help="the Hub repository id, org/name (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    push.add_argument("--space", help="also create the Gradio Space org/name serving `cxrgen app` for --repo")
    push.set_defaults(handler=_push)

    app = commands.add_parser(
        "app", help="a local web app (Gradio, the [app] extra): report, observations, figures", parents=[common]
    )
    app.add_argument("--model", required=True, help=f"a saved {names} model folder, or a Hub repository id")
    app.add_argument("--port", type=int, help="the port to serve on (default: 7860 or the next free one)")
    app.add_argument("--host", default="127.0.0.1", help="the address to serve on (default: this machine only)")
    app.set_defaults(handler=_app)

    train = commands.add_parser(
        "train",
        help="train one stage (Trainer arguments such as --learning_rate or --report_to pass through)",
        description="Train one stage. Any further --<name> <value> is a transformers TrainingArguments field "
        "(e.g. --learning_rate 1e-4 --report_to tensorboard); it overrides the config's 'training' section.",
        parents=[common, image_check, pickle],
    )
    train.add_argument("stage", choices=stage_names(), help="the training stage")
    train.add_argument(
        "--config", required=True, help="a model preset name (e.g. iu-xray, tiny) or a YAML config file"
    )
    train.add_argument("--data", required=True, help="the annotation.json (train split; val for evaluation)")
    train.add_argument("--images", required=True, help="the image root the annotation's paths are relative to")
    train.add_argument("--output", required=True, help="the run folder: checkpoints, then the final model folder")
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest complete checkpoint in --output"
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --output: remove its model, card, evaluations and checkpoints first",
    )
    train.add_argument("--init", help="a model folder of the previous stage to start from (vlci: RadCARE or backbone)")
    train.add_argument(
        "--backbone-weights",
        metavar="PATH_OR_HUB_ID",
        help="CMCRL stages: start the vision backbone from this transformers ResNet folder or Hub id (e.g. "
        "microsoft/resnet-101, the reference's ImageNet start) instead of random; not with --init",
    )
    train.set_defaults(handler=_train, passes_unknown_args=True)

    convert = commands.add_parser("convert", help="an official checkpoint of another code base as a model folder")
    sources = convert.add_subparsers(dest="source", required=True)
    vlci = sources.add_parser(
        "vlci", help="a WissingChen/VLCI checkpoint, computing what the reference computes", parents=[common]
    )
    vlci.add_argument("checkpoint", help="the official checkpoint file (e.g. model_best.pth)")
    vlci.add_argument(
        "--vocab", required=True, help="its vocabulary: idx2token / token2idx JSON, a JSON list or one token a line"
    )
    vlci.add_argument("--output", required=True, help="the model folder to write")
    vlci.add_argument("--preset", default="iu-xray", help="the geometry: iu-xray (default), mimic-cxr or a YAML file")
    vlci.add_argument("--repo-id", help="the Hub repository id named on the card (default: the folder's name)")
    vlci.set_defaults(handler=_convert)

    demo = commands.add_parser(
        "demo",
        help="offline end-to-end run on phantom data: build, train, evaluate against baselines (CPU, minutes)",
        parents=[common],
    )
    demo.add_argument(
        "--model",
        choices=list(METHODS),
        default=DEFAULT_METHOD,
        help=f"which method to train (default: {DEFAULT_METHOD})",
    )
    demo.add_argument(
        "--output", default="cxrgen-demo", help="folder for the data, model and results (default: cxrgen-demo)"
    )
    demo.add_argument(
        "--source", choices=["auto", "iu", "synthetic"], default="auto", help="report text of the phantoms"
    )
    demo.add_argument(
        "--image-size", type=int, help="phantom and model image size (default: the method's demo setting)"
    )
    demo.add_argument("--max-studies", type=int, help="use at most this many studies (default: all)")
    demo.add_argument(
        "--max-steps",
        type=int,
        help="training steps of each stage that counts steps (default: the method's demo setting)",
    )
    demo.add_argument("--num-beams", type=int, help="beams for the model's reports (default: the demo setting)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo)

    benchmark = commands.add_parser(
        "benchmark",
        help="the quality benchmark on phantom data: N seeds of a recipe and its ablations against reference systems",
        parents=[common],
    )
    benchmark.add_argument("--model", choices=list(METHODS), default=DEFAULT_METHOD, help="which method to train")
    benchmark.add_argument(
        "--output",
        required=True,
        help="the benchmark folder (data, one folder per run, results); runs already complete there are reused",
    )
    benchmark.add_argument("--seeds", type=int, default=5, help="train with seeds 0..N-1 (default: 5)")
    benchmark.add_argument(
        "--ablation-seeds", type=int, help="train the ablations with seeds 0..N-1 only (default: all the seeds)"
    )
    benchmark.add_argument(
        "--profile", choices=["demo", "full"], default="demo", help="the demo recipe, or the longer full one"
    )
    benchmark.add_argument(
        "--ablations",
        default="all",
        help="'all' (default), 'none' or comma-separated names of the preset's ablations (e.g. no-vdm,no-ldm)",
    )
    benchmark.add_argument(
        "--source", choices=["auto", "iu", "synthetic"], default="auto", help="report text of the phantoms"
    )
    benchmark.add_argument("--max-studies", type=int, help="use at most this many studies (default: all)")
    benchmark.add_argument("--max-steps", type=int, help="training steps of each stage that counts steps")
    benchmark.set_defaults(handler=_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cxrgen`` console script; returns the exit code (2 for a user error, see above)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Training and generation reuse the memory each step frees instead of faulting it in again (cxrgen.allocator).
    keep_freed_memory()
    try:
        args.handler(args, unknown) if getattr(args, "passes_unknown_args", False) else args.handler(args)
    except USER_ERRORS as error:
        if args.debug:
            traceback.print_exc()
        print(f"cxrgen {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
