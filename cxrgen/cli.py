"""The ``cxrgen`` command. Each subcommand parses its arguments and calls the package; no logic lives here."""

import argparse
import json
import logging
import sys
from pathlib import Path

from .methods import DEFAULT_METHOD, METHODS, stage_names


def _prepare(args):
    from .data.annotation import write_annotation

    if args.dataset == "iu-xray":
        from .data.iu_xray import convert_iu_xray

        annotation = convert_iu_xray(
            reports_source=args.reports, images_dir=args.images, split=args.split, seed=args.seed
        )
        path = write_annotation(annotation, args.output)
    elif args.dataset == "mimic-cxr":
        from .data.mimic_cxr import convert_mimic_cxr

        annotation = convert_mimic_cxr(args.root, all_frontal_images=args.all_frontal)
        path = write_annotation(annotation, args.output)
    else:
        from .data.phantom_benchmark import build_phantom_benchmark

        path = build_phantom_benchmark(
            args.output, source=args.source, image_size=args.image_size, max_studies=args.max_studies, seed=args.seed
        )
    print(f"Wrote {path}")


def _evaluate(args):
    from .evaluation.metrics import evaluate_reports, format_metrics_table
    from .evaluation.predictions import read_predictions

    if args.model is not None:
        _evaluate_model(args)
        return
    for option in ("data", "images", "batch_size", "num_beams", "max_new_tokens"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} is only used with --model, not with --predictions.")
    records = read_predictions(args.predictions)
    result = evaluate_reports([r["prediction"] for r in records], [r["reference"] for r in records])
    print(format_metrics_table(result))
    output = Path(args.output) if args.output else Path(args.predictions).with_suffix(".metrics.json")
    output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"Wrote {output}")


def _evaluate_model(args):
    from .evaluation.metrics import format_metrics_table
    from .evaluation.report import evaluate_model

    if args.data is None or args.images is None:
        raise ValueError("--model needs --data (annotation.json) and --images (the image root of its paths).")
    result = evaluate_model(
        args.model,
        args.data,
        args.images,
        split=args.split,
        output_dir=args.output,
        batch_size=args.batch_size or 16,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
    )
    print(format_metrics_table(result["metrics"]))
    for path in result["paths"].values():
        print(f"Wrote {path}")


def _generate(args):
    from .inference import format_generation, generate_reports, load_generator

    generator = load_generator(args.model)
    result = generate_reports(generator, [args.images], num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)[
        0
    ]
    print(json.dumps(result, indent=2) if args.json else format_generation(result))


def _push(args):
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


def _train(args, trainer_args):
    from .trainers.stage_config import get_stage

    run = get_stage(args.stage)
    output = run(
        args.config, args.data, args.images, args.output, resume=args.resume, init=args.init, trainer_args=trainer_args
    )
    print(f"Wrote {output}")


def _demo(args):
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


def build_parser():
    """The argument parser of the ``cxrgen`` command."""
    names = " or ".join(method.display_name for method in METHODS.values())
    with_findings = ", ".join(method.display_name for method in METHODS.values() if method.structured_findings)
    parser = argparse.ArgumentParser(prog="cxrgen", description="Chest X-ray radiology report generation.")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="build an R2Gen annotation.json (and images for phantom data)")
    datasets = prepare.add_subparsers(dest="dataset", required=True)
    iu = datasets.add_parser("iu-xray", help="IU-Xray from the official NLM report archive (R2Gen protocol)")
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
    mimic = datasets.add_parser("mimic-cxr", help="MIMIC-CXR-JPG from its official CSVs and report files")
    mimic.add_argument("--root", required=True, help="folder with the mimic-cxr-2.0.0-*.csv(.gz) files and files/")
    mimic.add_argument("--all-frontal", action="store_true", help="keep every frontal image, not one per study")
    mimic.add_argument("--output", required=True, help="annotation.json to write")
    phantom = datasets.add_parser("phantom", help="synthetic phantom radiographs with real or templated reports")
    phantom.add_argument("--output", required=True, help="folder for annotation.json and images/")
    phantom.add_argument("--source", choices=["auto", "iu", "synthetic"], default="auto")
    phantom.add_argument("--image-size", type=int, default=224)
    phantom.add_argument("--max-studies", type=int, help="subsample each split proportionally to this many studies")
    phantom.add_argument("--seed", type=int, default=42)
    prepare.set_defaults(handler=_prepare)

    evaluate = commands.add_parser(
        "evaluate",
        help="score reports (NLG and clinical efficacy): a predictions file, or a model run on an annotation split",
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
    evaluate.set_defaults(handler=_evaluate)

    generate = commands.add_parser("generate", help="write the report of one study with a saved model")
    generate.add_argument("--model", required=True, help=f"a saved {names} model folder")
    generate.add_argument("images", nargs="+", metavar="IMAGE", help="the study's images, frontal first")
    generate.add_argument("--num-beams", type=int, help="override the model's generation_config")
    generate.add_argument("--max-new-tokens", type=int, help="override the model's generation_config")
    generate.add_argument(
        "--json", action="store_true", help=f"print JSON (report; {with_findings}: probabilities and clues)"
    )
    generate.set_defaults(handler=_generate)

    push = commands.add_parser("push", help="publish a saved model folder with its card to the Hugging Face Hub")
    push.add_argument("--model", required=True, help="the model folder (weights, processor, remote code, README.md)")
    push.add_argument("--repo", required=True, help="the Hub repository id, org/name (created when missing)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    push.set_defaults(handler=_push)

    train = commands.add_parser(
        "train",
        help="train one stage (Trainer arguments such as --learning_rate or --report_to pass through)",
        description="Train one stage. Any further --<name> <value> is a transformers TrainingArguments field "
        "(e.g. --learning_rate 1e-4 --report_to tensorboard); it overrides the config's 'training' section.",
    )
    train.add_argument("stage", choices=stage_names(), help="the training stage")
    train.add_argument(
        "--config", required=True, help="a model preset name (e.g. iu-xray, tiny) or a YAML config file"
    )
    train.add_argument("--data", required=True, help="the annotation.json (train split; val for evaluation)")
    train.add_argument("--images", required=True, help="the image root the annotation's paths are relative to")
    train.add_argument("--output", required=True, help="the run folder: checkpoints, then the final model folder")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    train.add_argument("--init", help="a model folder of the previous stage to start from (vlci: RadCARE or backbone)")
    train.set_defaults(handler=_train, passes_unknown_args=True)

    demo = commands.add_parser(
        "demo", help="offline end-to-end run on phantom data: build, train, evaluate against baselines (CPU, minutes)"
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
    return parser


def main(argv=None):
    """Entry point of the ``cxrgen`` console script."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.handler(args, unknown) if getattr(args, "passes_unknown_args", False) else args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"cxrgen {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
