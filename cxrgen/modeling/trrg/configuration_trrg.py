"""TRRG configurations: stage-1 disease-aware contrastive pre-training and stage-2 clue-enhanced generation.

Self-contained (torch/transformers only) because `save_pretrained` copies this file to the Hub as remote code.
"""

import copy

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

# Stage 2's `tiny` preset takes this vision tower over from a stage-1 folder, so both stages share one config.
TINY_VISION_CONFIG = {
    "model_type": "swin",
    "image_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depths": [1, 1],
    "num_heads": [2, 4],
    "window_size": 4,
}
# Named model settings of the two stages (`from_preset`). "tiny" is a few-minute CPU model for pipeline checks;
# "iu-xray" and "mimic-cxr" are the model defaults (Swin-B at 224 px; a BERT-base text tower at stage 1, transformers'
# default Llama, 7B-sized, at stage 2), the datasets differing only in training settings. Sizes that come from a
# tokenizer (vocab_size, pad/bos/eos and the <image>/<clue> token ids) are the caller's overrides.
CONTRASTIVE_PRESETS = {
    "tiny": {
        "vision_config": TINY_VISION_CONFIG,
        "text_config": {
            "model_type": "bert",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "max_position_embeddings": 64,
        },
        "projection_dim": 32,
    },
    "iu-xray": {},
    "mimic-cxr": {},
}
PRESETS = {
    "tiny": {
        "vision_config": TINY_VISION_CONFIG,
        "text_config": {
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        "projection_dim": 32,
        "num_query_tokens": 8,
        "interaction_hidden_size": 64,
        "interaction_layers": 1,
        "interaction_heads": 4,
    },
    "iu-xray": {},
    "mimic-cxr": {},
}

CLUE_SELECTIONS = ("threshold", "topk", "all")
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


def preset_values(presets: dict, name: str, overrides: dict, owner: str) -> dict:
    """Config kwargs of preset `name` updated by `overrides`: a sub-config mapping is merged into the preset's unless
    it names another `model_type`; any other override (a config object included) replaces the preset's value."""
    if name not in presets:
        raise ValueError(f"Unknown {owner} preset {name!r}: expected one of {sorted(presets)}")
    values = copy.deepcopy(presets[name])
    for key, value in overrides.items():
        previous = values.get(key)
        if (
            isinstance(value, dict)
            and isinstance(previous, dict)
            and value.get("model_type", previous.get("model_type")) == previous.get("model_type")
        ):
            value = {**previous, **value}
        values[key] = value
    return values


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

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrrgContrastiveConfig":
        """Build a named configuration ("tiny", "iu-xray", "mimic-cxr"; see `CONTRASTIVE_PRESETS`); keyword
        overrides win (a `vision_config` / `text_config` mapping is merged into the preset's)."""
        return cls(**preset_values(CONTRASTIVE_PRESETS, name, overrides, "TRRG contrastive"))

    def disease_prompts(self):
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


class TrrgConfig(PreTrainedConfig):
    """Stage 2: clue-enhanced report generation with any causal LM (see `TrrgForConditionalGeneration`).

    `vision_config` is any transformers vision encoder config (default Swin-B), `text_config` any causal LM config
    (default Llama). `projection_dim` is the stage-1 joint space width that the zero-shot prompt embeddings live in.
    Clue selection: "threshold" keeps the observations whose zero-shot probability reaches `clue_threshold` (one
    float, or one per observation), "topk" the `clue_top_k` most probable, "all" every observation; the prompt
    always carries `num_clue_tokens` clue slots, the unused ones filled with a learned "no clue" embedding.
    `num_query_tokens` learned queries read the visual tokens and the clues in an `interaction_hidden_size`-wide
    module (projected to the LLM width afterwards); `multi_view_fusion` "concat" lets them attend over the
    tokens of all real views, "mean" averages the views first (R2GenGPT).
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
    disease_loss_weight: float = 0.1
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
        if self.disease_loss_weight < 0:
            raise ValueError(f"TrrgConfig.disease_loss_weight must be >= 0, got {self.disease_loss_weight}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrrgConfig":
        """Build a named configuration ("tiny", "iu-xray", "mimic-cxr"; see `PRESETS`); keyword overrides win (a
        `vision_config` / `text_config` mapping is merged into the preset's). Pass the tokenizer's `image_token_id`,
        `clue_token_id` and the LLM's `vocab_size` / special token ids (in `text_config`) as overrides."""
        return cls(**preset_values(PRESETS, name, overrides, "TRRG"))

    def thresholds(self):
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
    def num_clue_tokens(self):
        """Number of `<clue>` placeholders a prompt carries (the clue slots)."""
        return self.clue_top_k if self.clue_selection == "topk" else len(self.observation_names)


__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "CONTRASTIVE_PRESETS",
    "PRESETS",
    "TINY_VISION_CONFIG",
    "TrrgConfig",
    "TrrgContrastiveConfig",
]
