"""The ``cxrgen`` command. Each subcommand parses its arguments and calls the package; no logic lives here."""

import argparse
import json
import logging
import sys
from pathlib import Path


def _prepare(args):
    from .data.annotation import write_annotation

    if args.dataset == "iu-xray":
        from .data.iu_xray import convert_iu_xray

        annotation = convert_iu_xray(reports_source=args.reports, images_dir=args.images, seed=args.seed)
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

    records = read_predictions(args.predictions)
    result = evaluate_reports([r["prediction"] for r in records], [r["reference"] for r in records])
    print(format_metrics_table(result))
    output = Path(args.output) if args.output else Path(args.predictions).with_suffix(".metrics.json")
    output.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"Wrote {output}")


def build_parser():
    """The argument parser of the ``cxrgen`` command."""
    parser = argparse.ArgumentParser(prog="cxrgen", description="Chest X-ray radiology report generation.")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="build an R2Gen annotation.json (and images for phantom data)")
    datasets = prepare.add_subparsers(dest="dataset", required=True)
    iu = datasets.add_parser("iu-xray", help="IU-Xray from the official NLM report archive (R2Gen protocol)")
    iu.add_argument("--reports", help="NLMCXR_reports.tgz or its extracted folder (default: the copy torchxrayvision ships)")
    iu.add_argument("--images", help="the NLM PNG folder; image paths then point at its files")
    iu.add_argument("--seed", type=int, default=42, help="seed of the 70/10/20 split")
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

    evaluate = commands.add_parser("evaluate", help="score generated reports (NLG and clinical efficacy)")
    evaluate.add_argument("--predictions", required=True, help="JSONL with id, prediction, reference per line")
    evaluate.add_argument("--output", help="metrics JSON to write (default: next to the predictions)")
    evaluate.set_defaults(handler=_evaluate)
    return parser


def main(argv=None):
    """Entry point of the ``cxrgen`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"cxrgen {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
