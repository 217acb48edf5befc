"""TRRG configurations: stage-1 disease-aware contrastive pre-training and stage-2 clue-enhanced generation.

Self-contained (torch/transformers only) because `save_pretrained` copies this file to the Hub as remote code.
"""

import copy
import dataclasses
import os
from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig

# A copy of cxrgen.labels.CHEXPERT_OBSERVATIONS: the model folder may not import the package (remote code).
CHEXPERT_OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# Several phrasings per polarity, averaged in embedding space (CheXzero-style prompt ensembling).
DEFAULT_POSITIVE_TEMPLATES = ("{}", "there is {}", "findings consistent with {}")
DEFAULT_NEGATIVE_TEMPLATES = ("no {}", "there is no {}", "no evidence of {}")
# "No Finding" reads badly inside the templates above, so it gets its own phrases.
DEFAULT_OBSERVATION_PROMPTS = {
    "No Finding": {
        "positive": ["no acute cardiopulmonary process", "the lungs are clear", "normal chest radiograph"],
        "negative": ["acute cardiopulmonary process", "the lungs are not clear", "abnormal chest radiograph"],
    }
}

# Swin-B/4 window 7 at 224 px (R2GenGPT's encoder): 7x7 patch tokens of width 1024.
SWIN_BASE = {"model_type": "swin", "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]}

# Named settings (`from_preset`) are YAML files in presets/ next to this file. They ship with the cxrgen package and
# are not copied with a model folder's remote code, which never needs them: a saved config loads from config.json.
PRESETS_DIR = Path(__file__).with_name("presets")
PRESET_KEYS = ("description", "models", "stages", "demo", "benchmark")
PRESET_FAMILY = "TRRG"


def preset_names() -> list[str]:
    """The names of the presets in `PRESETS_DIR` (none where this file runs as remote code)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def read_preset(name_or_path: str | os.PathLike) -> tuple[Path, dict]:
    """The file of a preset (a name of `PRESETS_DIR`, or a path to a YAML file) and its content, whose top-level keys
    and `models` sections (fields of this folder's configs) are checked.

    Kept identical in every model folder (tests/test_model_folder_copies.py): model folders run as remote code and
    cannot share a module.
    """
    if isinstance(name_or_path, os.PathLike) or str(name_or_path).endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"{path}: no such preset file.")
    elif not PRESETS_DIR.is_dir():
        raise ValueError(
            f"{PRESET_FAMILY} preset {name_or_path!r}: presets ship with the cxrgen package (pip install cxrgen) and this copy of "
            f"{Path(__file__).name} has none next to it (remote code). Saved configs load without them; build a new "
            "one from its fields or from a preset file's path."
        )
    elif name_or_path not in preset_names():
        raise ValueError(f"Unknown {PRESET_FAMILY} preset {name_or_path!r}: expected one of {preset_names()}")
    else:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    import yaml  # a dependency of transformers; imported here because only preset files need it

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the preset ({error}).") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping with keys among {list(PRESET_KEYS)}.")
    unknown = sorted(set(document) - set(PRESET_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {list(PRESET_KEYS)}.")
    if not isinstance(document.get("description"), str) or not document["description"].strip():
        raise ValueError(f"{path}: 'description' must say in a line what the preset is.")
    configs = {config.model_type: config for config in PRESET_CONFIGS}
    models = document.get("models", {})
    if not isinstance(models, dict) or set(models) - set(configs):
        raise ValueError(f"{path}: 'models' maps model types among {list(configs)} to config fields, got {models!r}.")
    for model_type, values in models.items():
        name = configs[model_type].__name__
        if not isinstance(values, dict):
            raise ValueError(f"{path}: models.{model_type} must map {name} fields to values, got {values!r}.")
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(configs[model_type])})
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown} in models.{model_type}; expected {name} fields.")
    return path, document


def preset_model(config_class: type, name_or_path: str | os.PathLike) -> dict:
    """The `models.<model_type>` section of a preset: the fields it sets on `config_class`."""
    path, document = read_preset(name_or_path)
    models = document.get("models", {})
    if config_class.model_type not in models:
        raise ValueError(
            f"{path}: the preset has no models.{config_class.model_type} ({config_class.__name__} fields)."
        )
    return models[config_class.model_type]


CLUE_SELECTIONS = ("threshold", "topk", "all", "none")
MULTI_VIEW_FUSIONS = ("concat", "mean")


def sub_config(value: dict | PreTrainedConfig | None, default: dict) -> PreTrainedConfig:
    """A sub-config from a config, a dict (`model_type` defaults to the default's) or None (the default).

    Written here rather than with transformers' `SubConfigSpec` (5.20+) so that the file runs as remote code on
    every release cxrgen supports.
    """
    if isinstance(value, PreTrainedConfig):
        return value
    kwargs = dict(default if value is None else value)
    return AutoConfig.for_model(kwargs.pop("model_type", default["model_type"]), **kwargs)


def merge_config_values(values: dict, overrides: dict) -> dict:
    """`values` updated by `overrides`: a sub-config mapping is merged into the one it overrides unless it names
    another `model_type`; any other override (a config object included) replaces the value."""
    merged = dict(values)
    for key, value in overrides.items():
        previous = merged.get(key)
        if (
            isinstance(value, dict)
            and isinstance(previous, dict)
            and value.get("model_type", previous.get("model_type")) == previous.get("model_type")
        ):
            value = {**previous, **value}
        merged[key] = value
    return merged


def preset_values(config_class: type, name_or_path: str | os.PathLike, overrides: dict) -> dict:
    """Config kwargs of a preset updated by `overrides` (see `merge_config_values`)."""
    return merge_config_values(copy.deepcopy(preset_model(config_class, name_or_path)), overrides)


def _check_observations(config):
    names = list(config.observation_names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{type(config).__name__}.observation_names must be unique non-empty strings, got {names}")


class TrrgContrastiveConfig(PreTrainedConfig):
    """Stage 1: an image encoder and a BERT-like sentence encoder aligned by disease-aware contrastive learning.

    `vision_config` is any transformers vision encoder config (default Swin-B), `text_config` any encoder-only
    text config (default BERT). Zero-shot perception uses `positive_templates` / `negative_templates` formatted with
    each observation's lower-cased name, except where `observation_prompts` gives explicit phrases.
    `finding_sentence_weight` is the sampling weight of sentences that mention a finding relative to the rest.
    With `same_findings_positive`, in-batch pairs whose sentences are identical or carry the same non-empty finding
    labels are positives of each other (soft targets) instead of negatives.
    `prompt_loss_weight` adds the disease-prompt loss: the zero-shot logits of each study (its image against the
    positive and negative prompts of every observation, encoded by the text tower in the same step) trained with
    BCE against the study report's labels, so that the prompts the zero-shot head uses are aligned with the images
    (0 turns it off). `prompt_positive_weights` (one per observation, or None for 1) weighs the positive term of
    each observation against the imbalance of rare findings; the trainer sets it from the training split.
    """

    model_type = "trrg_contrastive"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    observation_names: list[str] | tuple[str, ...] = CHEXPERT_OBSERVATIONS
    positive_templates: list[str] | tuple[str, ...] = DEFAULT_POSITIVE_TEMPLATES
    negative_templates: list[str] | tuple[str, ...] = DEFAULT_NEGATIVE_TEMPLATES
    observation_prompts: dict | None = None
    finding_sentence_weight: float = 4.0
    same_findings_positive: bool = True
    prompt_loss_weight: float = 0.0
    prompt_positive_weights: list[float] | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.observation_prompts is None:
            self.observation_prompts = {k: dict(v) for k, v in DEFAULT_OBSERVATION_PROMPTS.items()}
        self.vision_config = sub_config(self.vision_config, SWIN_BASE)
        self.text_config = sub_config(self.text_config, {"model_type": "bert"})
        super().__post_init__(**kwargs)
        _check_observations(self)
        for field in ("positive_templates", "negative_templates"):
            templates = list(getattr(self, field))
            if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
                raise ValueError(
                    f"TrrgContrastiveConfig.{field} must be strings with exactly one '{{}}', got {templates}"
                )
        for name, prompts in self.observation_prompts.items():
            if name not in self.observation_names or set(prompts) != {"positive", "negative"}:
                raise ValueError(
                    "TrrgContrastiveConfig.observation_prompts maps an observation name to "
                    f"{{'positive': [...], 'negative': [...]}}; got {name!r}: {prompts!r}"
                )
        if self.finding_sentence_weight <= 0:
            raise ValueError(
                f"TrrgContrastiveConfig.finding_sentence_weight must be > 0, got {self.finding_sentence_weight}"
            )
        if self.prompt_loss_weight < 0:
            raise ValueError(f"TrrgContrastiveConfig.prompt_loss_weight must be >= 0, got {self.prompt_loss_weight}")
        weights = self.prompt_positive_weights
        if weights is not None and (
            len(weights) != len(self.observation_names)
            or not all(isinstance(w, (int, float)) and w > 0 for w in weights)
        ):
            raise ValueError(
                "TrrgContrastiveConfig.prompt_positive_weights must be None or one positive number per observation "
                f"({len(self.observation_names)}), got {weights}"
            )

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> "TrrgContrastiveConfig":
        """Build the configuration of a preset (a name of `preset_names()`, e.g. "tiny", "iu-xray", "mimic-cxr", or a
        preset file's path); keyword overrides win (a `vision_config` / `text_config` mapping is merged into the
        preset's)."""
        return cls(**preset_values(cls, name_or_path, overrides))

    def disease_prompts(self) -> list[tuple[list[str], list[str]]]:
        """Return, per observation, the lists of positive and negative prompt sentences."""
        prompts = []
        for name in self.observation_names:
            if name in self.observation_prompts:
                entry = self.observation_prompts[name]
                prompts.append((list(entry["positive"]), list(entry["negative"])))
            else:
                phrase = name.lower()
                prompts.append(
                    (
                        [t.format(phrase) for t in self.positive_templates],
                        [t.format(phrase) for t in self.negative_templates],
                    )
                )
        return prompts

    def flat_disease_prompts(self) -> list[str]:
        """Every prompt sentence in one list: per observation its positive, then its negative prompts (the order in
        which `TrrgForContrastivePretraining.prompt_embeds` groups their features back)."""
        return [prompt for positives, negatives in self.disease_prompts() for prompt in (*positives, *negatives)]


class TrrgConfig(PreTrainedConfig):
    """Stage 2: clue-enhanced report generation with any causal LM (see `TrrgForConditionalGeneration`).

    `vision_config` is any transformers vision encoder config (default Swin-B), `text_config` any causal LM config
    (default Llama). `projection_dim` is the stage-1 joint space width that the zero-shot prompt embeddings live in.
    Clue selection: "threshold" keeps the observations whose zero-shot probability reaches `clue_threshold` (one
    float, or one per observation), "topk" the `clue_top_k` most probable, "all" every observation, "none" no
    observation (the ablation without clues: every slot is empty); the prompt always carries `num_clue_tokens` clue
    slots, the unused ones filled with a learned "no clue" embedding.
    `num_query_tokens` learned queries read the visual tokens and the clues in an `interaction_hidden_size`-wide
    module (projected to the LLM width afterwards); `multi_view_fusion` "concat" lets them attend over the
    tokens of all real views, "mean" averages the views first (R2GenGPT). `freeze_zero_shot_head` keeps the stage-1
    perception the clues come from as it was trained; `freeze_vision_tower` keeps the stage-1 vision features too.
    `label_clue_rate` is the share of training studies whose clues are built from their report's labels (positive =
    1, else 0; `disease_labels`) instead of the zero-shot probabilities (clue teacher forcing); generation always
    uses the zero-shot clues (or the given `clue_probabilities`).
    """

    model_type = "trrg"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 512
    observation_names: list[str] | tuple[str, ...] = CHEXPERT_OBSERVATIONS
    clue_selection: str = "threshold"
    clue_threshold: float | list[float] = 0.5
    clue_top_k: int = 5
    num_query_tokens: int = 32
    interaction_hidden_size: int = 768
    interaction_layers: int = 2
    interaction_heads: int = 8
    interaction_dropout: float = 0.0
    multi_view_fusion: str = "concat"
    projector_hidden_act: str = "gelu"
    freeze_zero_shot_head: bool = True
    freeze_vision_tower: bool = False
    disease_loss_weight: float = 0.1
    label_clue_rate: float = 0.0
    image_token_id: int | None = None
    clue_token_id: int | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.vision_config = sub_config(self.vision_config, SWIN_BASE)
        self.text_config = sub_config(self.text_config, {"model_type": "llama"})
        super().__post_init__(**kwargs)
        _check_observations(self)
        if self.clue_selection not in CLUE_SELECTIONS:
            raise ValueError(
                f"TrrgConfig.clue_selection must be one of {CLUE_SELECTIONS}, got {self.clue_selection!r}"
            )
        if self.multi_view_fusion not in MULTI_VIEW_FUSIONS:
            raise ValueError(
                f"TrrgConfig.multi_view_fusion must be one of {MULTI_VIEW_FUSIONS}, got {self.multi_view_fusion!r}"
            )
        thresholds = self.thresholds()
        if any(not 0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"TrrgConfig.clue_threshold values must lie in [0, 1], got {self.clue_threshold}")
        if not 1 <= self.clue_top_k <= len(self.observation_names):
            raise ValueError(
                f"TrrgConfig.clue_top_k must be in 1..{len(self.observation_names)}, got {self.clue_top_k}"
            )
        for field in ("num_query_tokens", "interaction_hidden_size", "interaction_layers", "interaction_heads"):
            if getattr(self, field) < 1:
                raise ValueError(f"TrrgConfig.{field} must be >= 1, got {getattr(self, field)}")
        if not 0.0 <= self.label_clue_rate <= 1.0:
            raise ValueError(f"TrrgConfig.label_clue_rate must lie in [0, 1], got {self.label_clue_rate}")
        if self.disease_loss_weight < 0:
            raise ValueError(f"TrrgConfig.disease_loss_weight must be >= 0, got {self.disease_loss_weight}")

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> "TrrgConfig":
        """Build the configuration of a preset (a name of `preset_names()`, e.g. "tiny", "iu-xray", "mimic-cxr", or a
        preset file's path); keyword overrides win (a `vision_config` / `text_config` mapping is merged into the
        preset's). Pass the tokenizer's `image_token_id`, `clue_token_id` and the LLM's `vocab_size` / special token
        ids (in `text_config`) as overrides."""
        return cls(**preset_values(cls, name_or_path, overrides))

    def thresholds(self) -> list[float]:
        """Per-observation clue thresholds (a single `clue_threshold` applies to every observation)."""
        if isinstance(self.clue_threshold, (int, float)):
            return [float(self.clue_threshold)] * len(self.observation_names)
        thresholds = [float(t) for t in self.clue_threshold]
        if len(thresholds) != len(self.observation_names):
            raise ValueError(
                f"TrrgConfig.clue_threshold has {len(thresholds)} values for {len(self.observation_names)} observations"
            )
        return thresholds

    @property
    def num_clue_tokens(self) -> int:
        """Number of `<clue>` placeholders a prompt carries (the clue slots)."""
        return self.clue_top_k if self.clue_selection == "topk" else len(self.observation_names)


# The configs whose fields a preset's `models` section sets, by model type.
PRESET_CONFIGS = (TrrgContrastiveConfig, TrrgConfig)

__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "PRESETS_DIR",
    "TrrgConfig",
    "TrrgContrastiveConfig",
    "preset_names",
    "read_preset",
]
