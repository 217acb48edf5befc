"""The registry of report-generation methods, in the spirit of peft's ``register_peft_method``: one :class:`Method`
per method names its classes, its training stages, its model-card text, how inference generates with it and the
preset whose ``demo`` section is its ``cxrgen demo`` recipe. The CLI, inference, the demo, the card builder and the
trainers read it, so a new method is a model folder (with its ``presets/``), its trainer modules and one
:func:`register_method` call here.

Classes and trainers are named by import path (``"module:attribute"``) and imported on use (:func:`resolve`): this
module imports nothing heavy, and whatever imports it (the CLI included) stays fast.
"""

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """A training stage: ``cxrgen train <name>`` calls ``trainer`` (the ``run`` of a stage module, see
    :mod:`cxrgen.trainers.stage_config`). ``preset_sections`` are the sections of a preset's ``stages.<name>`` that the
    stage reads (a preset setting any other is an error, never ignored)."""

    name: str
    trainer: str
    summary: str
    preset_sections: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The import path of the stage module."""
        return self.trainer.partition(":")[0]


@dataclass(frozen=True)
class CardText:
    """What a model card says about the method: the paper's title, a summary of the method and its BibTeX."""

    title: str
    summary: str
    citation: str


@dataclass(frozen=True)
class Method:
    """A report-generation method.

    ``name`` is how users and files name it (``cxrgen demo --model``, the card's tag, ``method`` arguments);
    ``config``, ``model`` (the report generator), ``pretraining_model`` (the first stage's model, which cannot write
    reports) and ``processor`` are import paths; the configuration module of ``config`` also reads the method's
    presets (:mod:`cxrgen.presets`). ``stages`` run in the order listed where one starts from another.

    Inference: with ``prompt_in_output``, ``generate`` returns the prompt before the report (a decoder-only LM) and
    ``post_process_generation`` is given its length; with ``structured_findings``, the model's
    ``structured_findings(pixel_values, pixel_mask)`` adds per-study findings to each report; with
    ``attention_rollout``, the output of ``get_encoder()(pixel_values, pixel_mask)`` has ``attention_rollout``
    (B, heads, V * grid_size**2) and ``local_patch_indices`` (the patches it selects), which
    :mod:`cxrgen.visualization` draws over each view.
    """

    name: str
    display_name: str
    config: str
    model: str
    pretraining_model: str
    processor: str
    stages: tuple[Stage, ...]
    card: CardText
    prompt_in_output: bool
    structured_findings: bool
    demo_preset: str
    attention_rollout: bool = False


METHODS: dict[str, Method] = {}
# The method `cxrgen demo` trains when none is named.
DEFAULT_METHOD = "cmcrl"


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`; its name and stage names must be new."""
    if method.name in METHODS:
        raise ValueError(f"Method {method.name!r} is already registered.")
    names = [stage.name for stage in method.stages]
    taken = sorted({name for name in names if name in stage_names() or names.count(name) > 1})
    if taken:
        raise ValueError(f"Method {method.name!r}: the stage name(s) {taken} are taken; stage names are unique.")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}: expected one of {list(METHODS)}.")
    return METHODS[name]


def stage_names() -> list[str]:
    """Every method's training stages, in registration order."""
    return [stage.name for method in METHODS.values() for stage in method.stages]


def find_stage(name: str) -> tuple[Method, Stage]:
    """The method and the stage that ``cxrgen train <name>`` runs."""
    for method in METHODS.values():
        for stage in method.stages:
            if stage.name == name:
                return method, stage
    raise ValueError(f"Unknown training stage {name!r}: expected one of {stage_names()}.")


def resolve(path: str) -> object:
    """The object an import path ``"module:attribute"`` names (importing the module)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


register_method(
    Method(
        name="cmcrl",
        display_name="CMCRL",
        config="cxrgen.modeling.cmcrl.configuration_cmcrl:CmcrlConfig",
        model="cxrgen.modeling.cmcrl.modeling_cmcrl:CmcrlForConditionalGeneration",
        pretraining_model="cxrgen.modeling.cmcrl.modeling_cmcrl:CmcrlForPreTraining",
        processor="cxrgen.processing.processing_cmcrl:CmcrlProcessor",
        stages=(
            Stage(
                "backbone",
                "cxrgen.trainers.backbone:run",
                "vision backbone trained as a classifier of the 14 observations",
            ),
            Stage("radcare", "cxrgen.trainers.radcare:run", "RadCARE pre-training", ("processor",)),
            Stage("vlci", "cxrgen.trainers.vlci:run", "VLCI fine-tuning"),
        ),
        card=CardText(
            title="Cross-Modal Causal Representation Learning for Radiology Report Generation",
            summary=(
                "CMCRL trains in two stages. RadCARE pre-training aligns images and reports with a multiway "
                "transformer, degradation-aware masked image restoration and four task mixes. VLCI fine-tuning then "
                "generates the report through a Visual Deconfounding Module and a Linguistic Deconfounding Module, "
                "which approximate a front-door causal intervention against visual and linguistic biases."
            ),
            # Only the first author of the TIP version could be confirmed; BibTeX renders "and others" as "et al.".
            citation="""@article{chen2025cmcrl,
  title     = {Cross-Modal Causal Representation Learning for Radiology Report Generation},
  author    = {Chen, Weixing and others},
  journal   = {IEEE Transactions on Image Processing},
  volume    = {34},
  pages     = {2970--2985},
  year      = {2025},
  doi       = {10.1109/TIP.2025.3568746},
  eprint    = {2303.09117},
  archivePrefix = {arXiv}
}""",
        ),
        prompt_in_output=False,
        structured_findings=False,
        demo_preset="tiny",
        attention_rollout=True,
    )
)

register_method(
    Method(
        name="trrg",
        display_name="TRRG",
        config="cxrgen.modeling.trrg.configuration_trrg:TrrgConfig",
        model="cxrgen.modeling.trrg.modeling_trrg:TrrgForConditionalGeneration",
        pretraining_model="cxrgen.modeling.trrg.modeling_trrg:TrrgForContrastivePretraining",
        processor="cxrgen.processing.processing_trrg:TrrgProcessor",
        stages=(
            Stage(
                "trrg-contrastive",
                "cxrgen.trainers.trrg_contrastive:run",
                "disease-aware contrastive pre-training",
                ("processor", "training"),
            ),
            Stage(
                "trrg",
                "cxrgen.trainers.trrg:run",
                "clue-enhanced LLM fine-tuning",
                ("model", "processor", "training"),
            ),
        ),
        card=CardText(
            title=(
                "TRRG: Towards Truthful Radiology Report Generation With Cross-modal Disease Clue Enhanced Large "
                "Language Model"
            ),
            summary=(
                "TRRG trains in two stages. Disease-aware image-sentence contrastive pre-training sharpens the vision "
                "encoder's perception of disease details. Fine-tuning then feeds a causal language model with visual "
                "tokens and disease clue embeddings from zero-shot disease perception (clue injection), fused by a "
                "cross-modal clue interaction module. The paper's full text and code are not public: where the "
                "abstract leaves a detail open, this implementation takes the simplest design that matches it, as "
                "documented in the model code. One addition of this implementation: stage 1 also trains the "
                "zero-shot disease prompts against the report labels (a BCE disease-prompt loss), without which "
                "the zero-shot perception stayed near chance in the project's synthetic-image benchmark. Three "
                "stage-2 options it adds, used by its small CPU recipe: the stage-1 vision tower kept frozen, "
                "training studies drawn by the rarity of their findings (trained on the reports as they come, the "
                "small stage-2 model wrote the normal report for every study), and clue teacher forcing: in "
                "training, the clues come from the report's own labels (trained on the zero-shot clues, the small "
                "language model learned to ignore them); generation always uses the zero-shot clues."
            ),
            citation="""@inproceedings{wang2025trrg,
  title     = {{TRRG}: Towards Truthful Radiology Report Generation With Cross-modal Disease Clue Enhanced Large Language Model},
  author    = {Wang, Yuhao and Hao, Chao and Cui, Yawen and Su, Xinqi and Xie, Weicheng and Tan, Tao and Yu, Zitong},
  booktitle = {Medical Image Computing and Computer Assisted Intervention -- MICCAI 2025},
  year      = {2025},
  doi       = {10.1007/978-3-032-04981-0_61},
  eprint    = {2408.12141},
  archivePrefix = {arXiv}
}""",
        ),
        prompt_in_output=True,
        structured_findings=True,
        demo_preset="tiny",
    )
)

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "CardText",
    "Method",
    "Stage",
    "find_stage",
    "get_method",
    "register_method",
    "resolve",
    "stage_names",
]
