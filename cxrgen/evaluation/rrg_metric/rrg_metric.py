"""An `evaluate` metric for radiology report generation: pycocoevalcap NLG scores plus CheXpert clinical efficacy.

Load it from its folder, offline: ``evaluate.load(str(cxrgen.evaluation.metrics.RRG_METRIC_PATH))``. It needs
the cxrgen package installed and delegates all work to ``cxrgen.evaluation.metrics.evaluate_reports``.
"""

import datasets
import evaluate

from cxrgen.evaluation.metrics import evaluate_reports

_DESCRIPTION = """
BLEU-1..4, METEOR, ROUGE-L and CIDEr as pycocoevalcap computes them (no PTB tokenizer, references never
truncated; METEOR needs Java and is reported as unavailable without it), and clinical-efficacy precision,
recall and F1 (micro, macro, example-based and per observation) from cxrgen's rule-based CheXpert labeler
applied to both sides. Research use only.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated reports (strings).
    references: list of reference reports (strings), one per prediction.
Returns:
    {"nlg": {"BLEU-1", ..., "METEOR", "ROUGE-L", "CIDEr", "unavailable"},
     "ce": {"micro", "macro", "example", "per_observation", "num_reports"}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RrgMetric(evaluate.Metric):
    """Radiology report generation metrics (NLG + clinical efficacy) from cxrgen."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return evaluate_reports(list(predictions), list(references))
