"""Configuration of CMCRL: RadCARE pre-training and VLCI report generation.

Self-contained (torch/transformers only) because `save_pretrained` ships it to the Hub as remote code.
"""

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

# A two-stage basic-block ResNet with stride 8, for tests and smoke runs.
RESNET_TINY = {
    "model_type": "resnet",
    "embedding_size": 8,
    "hidden_sizes": [16, 32],
    "depths": [1, 1],
    "layer_type": "basic",
    "out_features": ["stage2"],
}

PRETRAINING_TASKS = ("vt2t", "vt2v", "v2v", "t2t")
DEGRADATIONS = ("none", "maxpool", "avgpool", "bilinear")

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

PRESETS = {
    # The paper's IU-Xray setting: 3+3 layers, two views (frontal, lateral), reports up to 60 tokens.
    "iu-xray": {
        "encoder_layers": 3,
        "decoder_layers": 3,
        "num_views": 2,
        "max_report_length": 60,
    },
    # The paper's MIMIC-CXR setting: 6+6 layers, one image per study, reports up to 80 tokens.
    "mimic-cxr": {
        "encoder_layers": 6,
        "decoder_layers": 6,
        "num_views": 1,
        "max_report_length": 80,
    },
    # Every code path at toy size: 32 px images, 4x4 feature grid, 2x2 global grid.
    "tiny": {
        "vocab_size": 40,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "image_size": 32,
        "backbone_stride": 8,
        "backbone_config": RESNET_TINY,
        "num_views": 2,
        "local_top_k": 2,
        "global_num_heads": 2,
        "global_head_dim": 8,
        "ldm_intermediate_size": 64,
        "max_report_length": 16,
        "max_position_embeddings": 64,
        "pretraining_max_length": 24,
    },
}


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
    `CmcrlConfig.from_preset("iu-xray" | "mimic-cxr" | "tiny", **overrides)` for the named settings.

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
    initializer_range: float = 0.02
    max_position_embeddings: int = 512
    max_report_length: int = 60
    generation_num_beams: int = 3

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

    def _check(self):
        def fail(field, expected):
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
    def from_preset(cls, name: str, **overrides) -> "CmcrlConfig":
        """Build a named configuration ("iu-xray", "mimic-cxr", "tiny"); keyword overrides win."""
        if name not in PRESETS:
            raise ValueError(f"Unknown CMCRL preset {name!r}: expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["CmcrlConfig", "PRETRAINING_TASKS", "PRESETS"]
