"""Configuration of CMCRL: RadCARE pre-training and VLCI report generation.

Self-contained (torch/transformers only) because `save_pretrained` ships it to the Hub as remote code.
"""

import dataclasses
import os
from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig

# ResNet-101 C1-C4 (stride 16, 1024 channels), the reference's visual extractor without stage 4.
RESNET101_C4 = {
    "model_type": "resnet",
    "embedding_size": 64,
    "hidden_sizes": [256, 512, 1024],
    "depths": [3, 4, 23],
    "layer_type": "bottleneck",
    "out_features": ["stage3"],
}

PRETRAINING_TASKS = ("vt2t", "vt2v", "v2v", "t2t")
DEGRADATIONS = ("none", "maxpool", "avgpool", "bilinear")
LDM_VARIANTS = ("causal", "reference")
LAYER_NORM_VARIANTS = ("standard", "reference")

AUTO_MAP = {
    "AutoModel": "modeling_cmcrl.CmcrlForConditionalGeneration",
    "AutoModelForPreTraining": "modeling_cmcrl.CmcrlForPreTraining",
}
CUSTOM_PIPELINES = {
    "image-to-text": {
        "impl": "pipeline_cmcrl.RadiologyReportGenerationPipeline",
        "pt": ["AutoModelForImageTextToText"],
        "tf": [],
        "type": "multimodal",
    }
}

# Named settings (`from_preset`) are YAML files in presets/ next to this file. They ship with the cxrgen package and
# are not copied with a model folder's remote code, which never needs them: a saved config loads from config.json.
PRESETS_DIR = Path(__file__).with_name("presets")
PRESET_KEYS = ("description", "models", "stages", "demo", "benchmark")
PRESET_FAMILY = "CMCRL"


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


def sub_config(value: dict | PreTrainedConfig | None, default: dict) -> PreTrainedConfig:
    """A sub-config from a config, a dict (`model_type` defaults to the default's) or None (the default).

    Written here rather than with transformers' `SubConfigSpec` (5.20+) so that the file runs as remote code on
    every release cxrgen supports.
    """
    if isinstance(value, PreTrainedConfig):
        return value
    kwargs = dict(default if value is None else value)
    return AutoConfig.for_model(kwargs.pop("model_type", default["model_type"]), **kwargs)


class CmcrlConfig(PreTrainedConfig):
    r"""Configuration of the CMCRL models (`CmcrlForPreTraining`, `CmcrlForConditionalGeneration`).

    Defaults are the paper's sizes (width 512, 8 heads, FFN 2048, ResNet-101 C1-C4 at 224 px). Use
    `CmcrlConfig.from_preset("iu-xray" | "mimic-cxr" | "tiny", **overrides)` for the named settings (`preset_names()`).

    Token ids follow the report tokenizer of this package: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, and generation
    starts from [BOS].

    Vision: `backbone_config` is any transformers backbone config (built with `AutoBackbone`, randomly
    initialised); its last feature map must have stride `backbone_stride`, so the token grid is
    `image_size // backbone_stride` on each side. Studies have up to `num_views` images. `freeze_backbone`
    keeps the backbone as loaded (e.g. by `load_backbone_weights`): no gradients, and its BatchNorm layers stay in
    eval mode during training.

    VLCI: `use_vdm` / `use_ldm` switch the visual / linguistic deconfounding modules; `local_top_k` patches are
    taken per attention head from the attention rollout; the global sampler pools the grid by 2 and runs
    `global_num_heads` x `global_head_dim` relative-position attention; `ldm_intermediate_size` is the FFN width
    of the LDM cross layers; `fdi_scale` divides front-door scores by sqrt(hidden_size) (the reference does not).

    Reference computation (for checkpoints converted from WissingChen/VLCI): `ldm_variant="reference"` lets every
    decoder position's front-door sampling span the whole target sequence, future tokens and padding included, as
    the reference does (so training sees the future; generation re-runs the whole prefix at every step, without a
    KV cache); the default "causal" samples only positions <= t. `layer_norm_variant="reference"` normalises with
    the unbiased standard deviation and adds `layer_norm_eps` to it, instead of the variance ("standard"); the
    global sampler keeps `nn.LayerNorm` in both, as the reference's CoAtNet block does.

    Generation: `generation_num_beams` beams, `generation_no_repeat_ngram_size` (transformers'
    `no_repeat_ngram_size`: 3 blocks repeated trigrams, the reference's `block_trigrams`; 0 blocks nothing),
    `generation_length_penalty` (transformers' `length_penalty`: 0 ranks finished beams by their summed
    log-probability, as the reference's beam search does; 1, transformers' default, by their mean) and at most
    `max_report_length` tokens, written into the model's `generation_config`.

    RadCARE: `mask_ratio` of patches are hidden; the encoder sees a `degradation` ("none", "maxpool",
    "avgpool", "bilinear") of the image, downsampled by `degradation_factor` and brought back to full size;
    targets are the full-resolution patches (of size `backbone_stride`), optionally normalised per patch
    (`norm_pix_loss`). `pretraining_task_probs` gives the sampling probability of the tasks
    ("vt2t", "vt2v", "v2v", "t2t") when `forward` is called without a task.
    """

    model_type = "cmcrl"
    sub_configs = {"backbone_config": AutoConfig}

    vocab_size: int = 4350
    hidden_size: int = 512
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    encoder_layers: int = 3
    decoder_layers: int = 3
    activation_function: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    layer_norm_variant: str = "standard"
    initializer_range: float = 0.02
    max_position_embeddings: int = 512
    max_report_length: int = 60
    generation_num_beams: int = 3
    generation_no_repeat_ngram_size: int = 0
    generation_length_penalty: float = 1.0

    image_size: int = 224
    backbone_config: dict | PreTrainedConfig | None = None
    backbone_stride: int = 16
    num_views: int = 2
    use_view_embeddings: bool = True
    freeze_backbone: bool = False

    use_vdm: bool = True
    use_ldm: bool = True
    local_top_k: int = 6
    global_num_heads: int = 8
    global_head_dim: int = 32
    ldm_intermediate_size: int = 2048
    fdi_scale: bool = False
    ldm_variant: str = "causal"
    readd_position_after_encoder: bool = True

    mask_ratio: float = 0.85
    degradation: str = "maxpool"
    degradation_factor: int = 2
    norm_pix_loss: bool = False
    pretraining_max_length: int = 100
    pretraining_task_probs: list[float] | tuple[float, ...] = (1 / 3, 1 / 3, 1 / 6, 1 / 6)

    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        self.backbone_config = sub_config(self.backbone_config, RESNET101_C4)
        self.pretraining_task_probs = [float(p) for p in self.pretraining_task_probs]
        super().__post_init__(**kwargs)
        # Every saved folder must load with AutoModel and pipeline("image-to-text") from remote code alone;
        # register_for_auto_class adds the AutoConfig / AutoModelForImageTextToText / AutoProcessor entries.
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.custom_pipelines = {**CUSTOM_PIPELINES, **(getattr(self, "custom_pipelines", None) or {})}
        self._check()

    def _check(self) -> None:
        def fail(field: str, expected: str) -> None:
            raise ValueError(f"CmcrlConfig.{field}={getattr(self, field)!r}: expected {expected}")

        if self.hidden_size % self.num_attention_heads:
            fail("hidden_size", f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.image_size % self.backbone_stride:
            fail("image_size", f"a multiple of backbone_stride={self.backbone_stride}")
        if self.num_views < 1:
            fail("num_views", "at least 1")
        if not 1 <= self.local_top_k <= self.grid_size**2:
            fail("local_top_k", f"between 1 and the number of patches per view ({self.grid_size**2})")
        if not 0.0 <= self.mask_ratio < 1.0:
            fail("mask_ratio", "in [0, 1)")
        if self.degradation not in DEGRADATIONS:
            fail("degradation", f"one of {DEGRADATIONS}")
        if self.ldm_variant not in LDM_VARIANTS:
            fail("ldm_variant", f"one of {LDM_VARIANTS}")
        if self.layer_norm_variant not in LAYER_NORM_VARIANTS:
            fail("layer_norm_variant", f"one of {LAYER_NORM_VARIANTS}")
        if self.generation_no_repeat_ngram_size < 0:
            fail("generation_no_repeat_ngram_size", "0 (off) or a positive n-gram size")
        if self.degradation_factor < 1:
            fail("degradation_factor", "at least 1")
        probs = self.pretraining_task_probs
        if len(probs) != len(PRETRAINING_TASKS) or min(probs) < 0 or sum(probs) <= 0:
            fail("pretraining_task_probs", f"{len(PRETRAINING_TASKS)} non-negative weights for {PRETRAINING_TASKS}")
        if len({self.pad_token_id, self.bos_token_id, self.eos_token_id}) != 3:
            fail("eos_token_id", "pad, bos and eos ids to be distinct (EOS is a training target)")

    @property
    def grid_size(self) -> int:
        """Side of the backbone's token grid for one view."""
        return self.image_size // self.backbone_stride

    @property
    def global_grid_size(self) -> int:
        """Side of the grid after the global sampler's stride-2 max-pool (kernel 3, padding 1)."""
        return (self.grid_size - 1) // 2 + 1

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> "CmcrlConfig":
        """Build the configuration of a preset (a name of `preset_names()`, e.g. "iu-xray", "mimic-cxr", "tiny", or a
        preset file's path); keyword overrides win."""
        return cls(**{**preset_model(cls, name_or_path), **overrides})


# The configs whose fields a preset's `models` section sets, by model type.
PRESET_CONFIGS = (CmcrlConfig,)

__all__ = ["CmcrlConfig", "PRESETS_DIR", "PRETRAINING_TASKS", "preset_names", "read_preset"]
