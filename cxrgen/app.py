"""``cxrgen app``: a local Gradio app for a saved cxrgen model folder, and its Hub Space (``cxrgen push --space``).

Upload the views of one study (frontal first); the app shows the generated report, the 14 observations the labeler
reads in it, and the figures of :mod:`cxrgen.visualization` (CMCRL: the attention rollout over each view with the
selected local patches; TRRG: the per-observation probabilities and the clues injected). It runs offline on CPU.

gradio is the ``[app]`` extra and is imported only here, inside the functions that need it, so that ``import
cxrgen`` and the other commands do not load it.
"""

import importlib.metadata
import re
from pathlib import Path

from cxrgen import __version__
from cxrgen.inference import load_generator
from cxrgen.methods import get_method

RESEARCH_NOTICE = (
    "**Research use only.** This app shows a research model's output. It is not a medical device: never use its "
    "reports, observations or figures to make or support clinical decisions. A model trained on phantom data says "
    "nothing about clinical performance."
)
VIEW_FILE_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
# A Hub repository id (namespace/name), as opposed to a local folder that does not exist.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# System fonts: the default theme fetches Google Fonts, which an offline browser cannot reach.
_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}
SPACE_APP_TEMPLATE = '''"""Gradio Space of the cxrgen model {model_repo}, written by `cxrgen push --space`. Research use only."""

from cxrgen.app import build_app, launch

demo = build_app("{model_repo}")

if __name__ == "__main__":
    launch(demo, host="0.0.0.0", port=7860)
'''


def _import_gradio():
    try:
        import gradio
    except ImportError as error:
        raise ImportError('The cxrgen app needs gradio: pip install "cxrgen[app]" (or -e ".[app]").') from error
    return gradio


def resolve_model(model: str | Path) -> Path:
    """A local model folder as it is, or a Hub repository id (``org/name``) downloaded to the Hub cache.

    Raises:
        FileNotFoundError: ``model`` is neither an existing folder nor a repository id.
    """
    path = Path(model)
    if path.exists():
        return path
    if not _REPO_ID.fullmatch(str(model)):
        raise FileNotFoundError(f"Model folder not found: {model} (nor is it a Hub repository id, org/name).")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(model)))
    except OSError as error:  # huggingface_hub's HTTP, offline and not-found errors are all OSErrors
        raise FileNotFoundError(
            f"{model} is no model folder here, and it could not be fetched as a Hub repository: {error}"
        ) from error


def intended_use(folder: Path) -> str:
    """The model card's warnings and its "Intended use" section, as Markdown ("" when the folder has no card)."""
    card = folder / "README.md"
    if not card.is_file():
        return ""
    text = card.read_text(encoding="utf-8").split("\n---\n", 1)[-1]  # without the metadata header
    warnings = [line for line in text.split("\n## ", 1)[0].splitlines() if line.startswith(">")]
    section = re.search(r"^## Intended use\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    parts = ["\n".join(warnings)] + ([section.group(1).strip()] if section else [])
    return "\n\n".join(part for part in parts if part)


# What the image-to-text pipelines of prompt-in-output methods (TRRG) generate when their folder sets no limit.
DEFAULT_MAX_NEW_TOKENS = 100


def _default_max_new_tokens(generation_config, prompt_in_output: bool) -> int:
    if generation_config.max_new_tokens is not None:
        return generation_config.max_new_tokens
    # A prompt-in-output model's max_length counts its prompt; CMCRL's counts the report with its [BOS].
    return DEFAULT_MAX_NEW_TOKENS if prompt_in_output else max(1, generation_config.max_length - 1)


def _user_message(error: Exception, paths: list[str]) -> str:
    """The error as the CLI words it, with each upload named by its file name instead of gradio's temporary path."""
    message = str(error)
    for path in paths:
        message = message.replace(path, Path(path).name)
    return message


def build_app(model: str | Path, device: str = "cpu"):
    """The Gradio app of a saved model folder or Hub repository id; returns a ``gradio.Blocks``, not launched.

    Its ``generate`` endpoint (``api_name="generate"``) takes the uploaded views (paths, frontal first), the
    number of beams and the maximum number of new tokens, and returns the report, the labeler's observations,
    TRRG's clues (an empty table for CMCRL) and the figures (a gallery of (image, caption)).
    """
    gr = _import_gradio()
    from cxrgen.visualization import visualize_study

    folder = resolve_model(model)
    generator = load_generator(folder, device=device)
    method = get_method(generator.method)
    generation_config = generator.model.generation_config
    max_new_tokens = _default_max_new_tokens(generation_config, method.prompt_in_output)

    def generate(files, num_beams, max_tokens):
        paths = list(files or [])  # gr.File gives file paths
        if not paths:
            raise gr.Error("Upload the study's views first (PNG, JPEG or DICOM; frontal first).")
        try:
            shown = visualize_study(generator, paths, num_beams=int(num_beams), max_new_tokens=int(max_tokens))
        except (ValueError, FileNotFoundError, ImportError) as error:
            raise gr.Error(_user_message(error, paths)) from error
        observations = [[name, reading] for name, reading in shown.observations.items()]
        clues = [[c["observation"], c["polarity"], round(c["probability"], 3)] for c in shown.result.get("clues", [])]
        return shown.report, observations, clues, [(image, caption) for image, caption in shown.figures]

    figures_label = {
        True: "Attention rollout over each view (heat-map) and the local patches VDM selected (outlined)",
        False: "Zero-shot probability per observation; bar colours: the clues injected and their polarity",
    }[method.attention_rollout]
    with gr.Blocks(title=f"cxrgen · {folder.name}", analytics_enabled=False) as app:
        gr.Markdown(f"# cxrgen · {method.display_name} · {folder.name}\n\n{RESEARCH_NOTICE}")
        card = intended_use(folder)
        if card:
            with gr.Accordion("Intended use (from the model card)", open=False):
                gr.Markdown(card)
        with gr.Row():
            with gr.Column():
                views = gr.File(
                    label="Views of one study (frontal first): PNG, JPEG or DICOM",
                    file_count="multiple",
                    file_types=VIEW_FILE_TYPES,
                    elem_id="views",
                )
                beams = gr.Slider(1, 8, value=generation_config.num_beams or 1, step=1, label="Beams")
                tokens = gr.Slider(1, max_new_tokens, value=max_new_tokens, step=1, label="Maximum new tokens")
                button = gr.Button("Generate report", variant="primary", elem_id="generate")
            with gr.Column():
                report = gr.Textbox(label="Generated report (research use only)", lines=4, elem_id="report")
                observations = gr.Dataframe(
                    headers=["Observation", "Labeler reading of the report"], label="Observations", interactive=False
                )
                clues = gr.Dataframe(
                    headers=["Clue", "Polarity", "Probability"],
                    label="Disease clues injected into the language model",
                    interactive=False,
                    visible=method.structured_findings,
                )
        figures = gr.Gallery(
            label=figures_label, columns=2, height="auto", object_fit="contain", format="png", elem_id="figures"
        )
        button.click(generate, [views, beams, tokens], [report, observations, clues, figures], api_name="generate")
    return app


def launch(app, host: str = "127.0.0.1", port: int | None = None, prevent_thread_lock: bool = False):
    """Serve a :func:`build_app` app (on ``host``: only this machine by default; ``port`` None: gradio's 7860 or
    the next free one)."""
    gr = _import_gradio()
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=prevent_thread_lock,
        theme=gr.themes.Default(**_FONTS),
        footer_links=["api"],
    )


def run_app(model: str | Path, host: str = "127.0.0.1", port: int | None = None, device: str = "cpu") -> None:
    """``cxrgen app``: build the app of ``model`` and serve it until interrupted."""
    launch(build_app(model, device=device), host=host, port=port)


def space_files(model_repo: str, requirement: str | None = None) -> dict[str, str]:
    """The files of a Hub Space that serves the app of ``model_repo``: app.py, requirements.txt, README.md.

    ``requirement`` is how the Space installs cxrgen (default ``cxrgen[app]==<this version>``; give a git URL where
    cxrgen is not on the Space's package index).
    """
    requirement = requirement or f"cxrgen[app]=={__version__}"
    try:
        gradio_version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError('A Space runs the app: install it first, pip install "cxrgen[app]".') from error
    readme = f"""---
title: {model_repo.split("/")[-1]}
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
models:
- {model_repo}
tags:
- cxrgen
- radiology-report-generation
- research-only
---

# {model_repo} (cxrgen app)

The cxrgen app of [{model_repo}](https://huggingface.co/{model_repo}): upload a chest X-ray study, read the
generated report and see what the model looked at.

> [!CAUTION]
> {RESEARCH_NOTICE}
"""
    return {
        "app.py": SPACE_APP_TEMPLATE.format(model_repo=model_repo),
        "requirements.txt": f"{requirement}\n",
        "README.md": readme,
    }


def push_space(space_repo: str, model_repo: str, *, private=False, token=None, requirement=None):
    """Create (or update) the Gradio Space ``space_repo`` serving the app of the Hub model ``model_repo``.

    A Space of a private model needs a token with read access as its ``HF_TOKEN`` secret. Returns the CommitInfo.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    files = space_files(model_repo, requirement)
    api = HfApi(token=token)
    api.create_repo(space_repo, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    operations = [CommitOperationAdd(name, content.encode("utf-8")) for name, content in files.items()]
    return api.create_commit(space_repo, operations, repo_type="space", commit_message=f"cxrgen app of {model_repo}")
