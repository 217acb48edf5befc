"""The paper recipes in scripts/: every `cxrgen` line parses with the CLI's parser, its Trainer arguments are
TrainingArguments fields, its presets exist, and each --init / --data / --images names what an earlier line writes or
an input of the script."""

import re
import shlex
from pathlib import Path

import pytest
from transformers import HfArgumentParser, Seq2SeqTrainingArguments

from cxrgen.cli import build_parser
from cxrgen.methods import find_stage
from cxrgen.presets import list_presets

SCRIPTS = sorted((Path(__file__).parent.parent / "scripts").glob("*.sh"))
# Arrays of optional arguments ("${REPORTS_ARG[@]}"), which the test cannot expand: dropped. Variables stay as text.
_ARRAY = re.compile(r'"\$\{\w+\[@\]\}"')


def cxrgen_commands(script: Path) -> list[list[str]]:
    """The argument lists of the script's `cxrgen ...` commands (continuation lines joined, comments dropped)."""
    text = script.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [shlex.split(_ARRAY.sub("", line))[1:] for line in lines if line.startswith("cxrgen ")]


def test_every_cmcrl_and_trrg_recipe_is_found():
    names = {script.name for script in SCRIPTS}
    assert {"cmcrl_radcare_mixed.sh", "iu_xray_cmcrl.sh", "mimic_cxr_cmcrl.sh", "iu_xray_trrg.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_script_commands_parse_against_the_cli(script):
    commands = cxrgen_commands(script)
    assert commands, f"{script.name} runs no cxrgen command"
    parser = build_parser()
    written = set()
    for argv in commands:
        args, unknown = parser.parse_known_args(argv)
        if args.command == "train":
            training = HfArgumentParser(Seq2SeqTrainingArguments)
            _, rest = training.parse_known_args(unknown + ["--output_dir", "unused"])
            assert not rest, f"{script.name}: {rest} are not TrainingArguments fields"
            method, _ = find_stage(args.stage)
            if not args.config.endswith((".yaml", ".yml")):
                assert args.config in list_presets(method.name), (
                    f"{script.name}: no {method.name} preset {args.config}"
                )
            for path in filter(None, (args.init, args.data)):
                assert path in written or path.startswith("$RADCARE"), f"{script.name}: nothing writes {path}"
            written.add(args.output)
        else:
            assert not unknown, f"{script.name}: {unknown}"
            if args.command == "evaluate":
                assert args.model in written, f"{script.name}: nothing writes {args.model}"
            written.add(args.output)
            if args.command == "prepare" and args.dataset == "mixed":
                assert {args.iu_annotation, args.mimic_annotation} <= written
                written.add(f"{args.output}/annotation.json")


def test_cmcrl_recipes_start_from_imagenet_and_the_mixed_radcare():
    commands = {script.name: cxrgen_commands(script) for script in SCRIPTS}
    parser = build_parser()
    radcare = [parser.parse_known_args(argv)[0] for argv in commands["cmcrl_radcare_mixed.sh"]][-1]
    assert (radcare.stage, radcare.config, radcare.backbone_weights) == (
        "radcare",
        "radcare-mixed",
        "microsoft/resnet-101",
    )
    for name in ("iu_xray_cmcrl.sh", "mimic_cxr_cmcrl.sh"):
        parsed = [parser.parse_known_args(argv)[0] for argv in commands[name]]
        (vlci,) = [args for args in parsed if args.command == "train"]
        assert vlci.stage == "vlci" and vlci.init == "$RADCARE"
