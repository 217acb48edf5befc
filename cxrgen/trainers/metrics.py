"""The report metrics of the generation stages: ``compute_metrics`` for the Trainer, and the names the model card
gives the logged values."""

import logging
from collections.abc import Callable, Iterable

from transformers import EvalPrediction, ProcessorMixin

from cxrgen.evaluation.metrics import evaluate_reports

logger = logging.getLogger(__name__)

# compute_metrics keys (the Trainer logs them as eval_<key>) -> names in the model card.
METRIC_NAMES = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    **{
        f"ce_{average}_{score}": f"CE {average} {score if score != 'f1' else 'F1'}"
        for average in ("micro", "macro", "example")
        for score in ("precision", "recall", "f1")
    },
}


def flatten_metrics(result: dict) -> dict[str, float]:
    """An ``evaluate_reports`` result as flat ``{key: value}`` with the keys of :data:`METRIC_NAMES`; metrics that
    could not be computed (METEOR without Java) are left out with a warning saying why."""
    nlg, ce = result["nlg"], result["ce"]
    flat = {}
    for key, name in METRIC_NAMES.items():
        if key.startswith("ce_"):
            _, average, score = key.split("_")
            flat[key] = ce[average][score]
        elif nlg[name] is not None:
            flat[key] = nlg[name]
    for name, reason in nlg["unavailable"].items():
        logger.warning("%s not computed: %s", name, reason)
    return flat


def card_metrics(result: dict) -> dict[str, float]:
    """An ``evaluate_reports`` result as the model card shows it: ``{card name: value}``."""
    return {METRIC_NAMES[key]: value for key, value in flatten_metrics(result).items()}


def logged_eval_metrics(
    log_history: list[dict], step: int, names: dict[str, str] | None = None
) -> dict[str, float] | None:
    """The metrics the Trainer logged when evaluating at ``step`` (None: no evaluation then), named as ``names``
    (logged key without ``eval_`` -> card name; default :data:`METRIC_NAMES`) names them."""
    names = METRIC_NAMES if names is None else names
    for entry in reversed(log_history):
        if entry.get("step") == step and any(key.startswith("eval_") for key in entry):
            return {names[key[5:]]: value for key, value in entry.items() if key[5:] in names}
    return None


def report_metrics(
    processor: ProcessorMixin, references: Iterable[str]
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for generation-based evaluation: decodes the generated ids of every evaluated study with
    ``processor.post_process_generation`` and scores them with ``cxrgen.evaluation.metrics.evaluate_reports``
    against ``references`` (the evaluation split's whole reports, in dataset order; never the truncated labels).

    The Trainer evaluates in dataset order (also across processes, where it gathers and drops the padding), so
    prediction i belongs to reference i."""
    references = list(references)

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        if len(predictions) != len(references):
            raise ValueError(
                f"compute_metrics got {len(predictions)} generated reports for {len(references)} "
                "evaluation studies: the evaluation data must be the dataset the metrics were built for."
            )
        return flatten_metrics(evaluate_reports(processor.post_process_generation(predictions), references))

    return compute_metrics


__all__ = ["METRIC_NAMES", "card_metrics", "flatten_metrics", "logged_eval_metrics", "report_metrics"]
