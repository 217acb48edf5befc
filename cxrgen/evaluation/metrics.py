"""Report-generation metrics: NLG scores through pycocoevalcap and clinical efficacy (CE) over the 14 CheXpert labels.

NLG scores are exactly what pycocoevalcap's scorers return for ``{i: [prediction]}`` / ``{i: [reference]}``
dicts: no PTB tokenizer is applied (R2Gen and CMCRL feed their cleaned, lower-cased, space-separated strings
straight to the scorers), and references are used whole, never truncated to a model's maximum length.
Pass cleaned text (``cxrgen.processing.cleaning.clean_report``) on both sides to compare with those papers.

Research use only: these numbers describe text similarity and labeler agreement, not clinical safety.
"""

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NUM_OBSERVATIONS, binarize

NLG_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
CE_AVERAGES = ("micro", "macro", "example")
RRG_METRIC_PATH = Path(__file__).resolve().parent / "rrg_metric"
JAVA_MISSING = (
    "METEOR needs a Java runtime (pycocoevalcap runs meteor-1.5.jar with `java`), and no `java` executable is on "
    "PATH. Install a Java runtime (e.g. `apt-get install default-jre-headless`) to get METEOR."
)


def _check_texts(predictions, references):
    for name, texts in (("predictions", predictions), ("references", references)):
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ValueError(f"{name}: expected a list of strings, got {type(texts).__name__}.")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{name}[{index}]: expected a string, got {type(text).__name__}.")
    if not predictions or not references:
        raise ValueError("predictions and references must not be empty.")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length ({len(predictions)} vs {len(references)}); "
            "each prediction needs exactly one reference."
        )


class MeteorScorer:
    """One METEOR process (pycocoevalcap's ``Meteor``, which runs meteor-1.5.jar with ``java``) for several scorings.

    Starting the jar costs seconds (the JVM loads its paraphrase tables) and each later scoring about one, so an
    evaluation of several systems passes one scorer to every :func:`compute_nlg_metrics` call. The jar scores every
    segment on its own, so a shared scorer gives exactly the scores of one process per call (tested). The process
    starts on construction and loads while the caller does other work; use the scorer as a context manager, or
    call :meth:`close`. Without Java (or when the jar fails), :meth:`score` returns None and the reason.
    """

    def __init__(self):
        self._meteor = None
        self.unavailable = JAVA_MISSING if shutil.which("java") is None else None
        if self.unavailable is None:
            try:
                self._meteor = Meteor()
            except (OSError, ValueError) as error:
                self.unavailable = _meteor_failure(error)

    def score(self, gts: dict, res: dict) -> tuple[float | None, str | None]:
        """pycocoevalcap's corpus METEOR of ``res`` against ``gts`` (``{key: [text]}`` dicts), and None; or None and
        why METEOR is unavailable."""
        if self._meteor is None:
            return None, self.unavailable
        # The jar reads one segment per line: a newline inside a text would desynchronise the exchange and hang it.
        # Its -norm tokenisation treats newlines as spaces anyway, so flattening them does not change the score.
        gts = {key: [text.replace("\r", " ").replace("\n", " ") for text in texts] for key, texts in gts.items()}
        res = {key: [text.replace("\r", " ").replace("\n", " ") for text in texts] for key, texts in res.items()}
        try:
            score, _ = self._meteor.compute_score(gts, res)
        except (OSError, ValueError) as error:
            # The process is broken now (a dead JVM, a desynchronised exchange): later scorings are refused too.
            self.unavailable = _meteor_failure(error)
            self.close()
            return None, self.unavailable
        return float(score), None

    def close(self) -> None:
        """Stop the Java process (pycocoevalcap only stops it in ``__del__``, whose timing is up to the garbage
        collector)."""
        if self._meteor is None:
            return
        meteor, self._meteor = self._meteor, None
        self.unavailable = self.unavailable or "the METEOR scorer was closed"
        # The lock is free unless a failed scoring left it held. Either way it is released at the end, because
        # pycocoevalcap's __del__ takes it again (and would wait forever on a held one).
        meteor.lock.acquire(blocking=False)
        try:
            meteor.meteor_p.stdin.close()
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
            meteor.meteor_p.stdout.close()
            meteor.meteor_p.stderr.close()
        finally:
            meteor.lock.release()

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _meteor_failure(error):
    return (
        f"METEOR failed while running pycocoevalcap's meteor-1.5.jar with `java` ({error!r}); check that "
        "the Java runtime works (`java -version`) and has at least 2 GB of memory."
    )


def compute_nlg_metrics(
    predictions: Sequence[str], references: Sequence[str], meteor: MeteorScorer | None = None
) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of predictions against references, as pycocoevalcap computes them.

    Args:
        predictions: generated reports, one string each.
        references: the reference reports, one string per prediction, used whole.
        meteor: a :class:`MeteorScorer` to score METEOR with (left open); by default one is started and stopped here.

    Returns:
        ``{"BLEU-1": ..., "BLEU-4": ..., "METEOR": ..., "ROUGE-L": ..., "CIDEr": ..., "unavailable": {...}}``.
        BLEU is corpus-level ("closest" reference length), the others are means over reports (CIDEr's IDF comes
        from the evaluated references, so it depends on the evaluated set). Without Java, ``"METEOR"`` is None and
        ``"unavailable"["METEOR"]`` says why; ``"unavailable"`` is empty when everything was computed.

    An empty prediction is scored as it is: pycocoevalcap handles it without error and gives it zero overlap
    (BLEU's brevity penalty, ROUGE-L 0, CIDEr 0, METEOR 0), which is the right score for saying nothing.

    Raises:
        ValueError: empty inputs, non-string items, or lists of different lengths.
    """
    _check_texts(predictions, references)
    gts = {index: [text] for index, text in enumerate(references)}
    res = {index: [text] for index, text in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    result = {f"BLEU-{n}": float(bleu[n - 1]) for n in range(1, 5)}
    if meteor is None:
        with MeteorScorer() as own:
            result["METEOR"], reason = own.score(gts, res)
    else:
        result["METEOR"], reason = meteor.score(gts, res)
    unavailable = {} if reason is None else {"METEOR": reason}
    result["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    result["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    result["unavailable"] = unavailable
    return result


def _check_labels(labels, name):
    try:
        array = np.asarray(labels)
    except ValueError as error:
        raise ValueError(f"{name}: expected {NUM_OBSERVATIONS} codes for every report ({error}).") from error
    if array.ndim != 2 or array.shape[1] != NUM_OBSERVATIONS or array.shape[0] == 0:
        raise ValueError(
            f"{name}: expected a non-empty list of {NUM_OBSERVATIONS}-code label lists (one per report, "
            f"CheXpert order), got shape {array.shape}."
        )
    if not np.isin(array, (0, 1, 2, 3)).all():
        raise ValueError(f"{name}: codes must be 0 (not mentioned), 1 (positive), 2 (negative) or 3 (uncertain).")
    return np.array([binarize(row) for row in array.tolist()], dtype=bool)


def _divide(numerator, denominator):
    """Elementwise numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _prf(tp, fp, fn):
    return _divide(tp, tp + fp), _divide(tp, tp + fn), _divide(2 * tp, 2 * tp + fp + fn)


def compute_ce_metrics(pred_labels: Sequence[Sequence[int]], ref_labels: Sequence[Sequence[int]]) -> dict:
    """Clinical-efficacy precision, recall and F1 over the 14 CheXpert observations.

    Both sides are binarized with ``cxrgen.labels.binarize`` (positive -> 1; negative, uncertain and not mentioned
    -> 0, as R2Gen's ``compute_ce.py`` does) and scored like scikit-learn's ``precision_recall_fscore_support``
    on multilabel indicators with ``zero_division=0``:

    * ``micro``: pool true/false positives and false negatives over all reports and observations.
    * ``macro``: unweighted mean of the 14 per-observation scores (rare observations weigh as much as common ones).
    * ``example`` (scikit-learn's ``"samples"``): scores per report, then averaged over reports; a report with no
      positive label on a side scores 0 there.

    Which papers use which (check each paper's code before comparing numbers): R2Gen's ``compute_ce.py`` calls
    ``compute_mlc``, which computes both macro and micro scores. R2Gen's reported MIMIC-CXR figures (P .333,
    R .273, F1 .276) cannot be micro, because micro F1 is always 2PR/(P+R) = .300 there; they look macro.
    CMCRL's (P .489, R .340, F1 .401) do satisfy F1 = 2PR/(P+R), so they are consistent with micro averaging;
    the author did not publish the script. Several later papers, among them LLM-based generators, report
    example-based scores; many do not say which average they used.

    Args:
        pred_labels: one list of 14 codes (``cxrgen.labels``) per generated report.
        ref_labels: one list of 14 codes per reference report.

    Returns:
        ``{"micro": {"precision", "recall", "f1"}, "macro": {...}, "example": {...},
        "per_observation": {name: {"precision", "recall", "f1", "support"}}, "num_reports": n}``.
    """
    pred = _check_labels(pred_labels, "pred_labels")
    ref = _check_labels(ref_labels, "ref_labels")
    if pred.shape != ref.shape:
        raise ValueError(f"pred_labels and ref_labels differ in length ({len(pred)} vs {len(ref)} reports).")
    tp, fp, fn = pred & ref, pred & ~ref, ~pred & ref
    per_p, per_r, per_f = _prf(tp.sum(axis=0), fp.sum(axis=0), fn.sum(axis=0))
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    example = [values.mean() for values in _prf(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1))]
    result = {
        "micro": dict(zip(("precision", "recall", "f1"), (float(v) for v in micro))),
        "macro": dict(zip(("precision", "recall", "f1"), (float(v.mean()) for v in (per_p, per_r, per_f)))),
        "example": dict(zip(("precision", "recall", "f1"), (float(v) for v in example))),
        "per_observation": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(CHEXPERT_OBSERVATIONS, per_p, per_r, per_f, ref.sum(axis=0))
        },
        "num_reports": int(len(ref)),
    }
    return result


def evaluate_reports(
    predictions: Sequence[str],
    references: Sequence[str],
    labeler: Callable[[str], list[int]] = label_report,
    meteor: MeteorScorer | None = None,
) -> dict:
    """NLG metrics of predictions against references plus CE metrics from labelling both sides with ``labeler``.

    ``meteor``: a :class:`MeteorScorer` shared by the evaluations of several systems (see
    :func:`compute_nlg_metrics`). The default labeler keeps the codes of the texts it has seen, so references
    scored again for another system are not labeled again.

    Returns:
        ``{"nlg": compute_nlg_metrics(...), "ce": compute_ce_metrics(...)}``.
    """
    _check_texts(predictions, references)
    return {
        "nlg": compute_nlg_metrics(predictions, references, meteor),
        "ce": compute_ce_metrics([labeler(text) for text in predictions], [labeler(text) for text in references]),
    }


def format_metrics_table(result: dict) -> str:
    """A plain-text table of an ``evaluate_reports`` result (NLG scores, CE averages, per-observation CE)."""
    lines = ["NLG"]
    nlg = result["nlg"]
    for name in NLG_METRICS:
        value = nlg[name]
        lines.append(f"  {name:<10} {'n/a' if value is None else f'{value:.4f}'}")
    for name, reason in nlg["unavailable"].items():
        lines.append(f"  ({name} unavailable: {reason})")
    ce = result["ce"]
    lines += [
        "",
        f"Clinical efficacy ({ce['num_reports']} reports, positive vs rest)",
        f"  {'average':<28} {'P':>7} {'R':>7} {'F1':>7}",
    ]
    for average in CE_AVERAGES:
        scores = ce[average]
        lines.append(f"  {average:<28} {scores['precision']:7.4f} {scores['recall']:7.4f} {scores['f1']:7.4f}")
    lines += ["", f"  {'observation':<28} {'P':>7} {'R':>7} {'F1':>7} {'support':>8}"]
    for name, scores in ce["per_observation"].items():
        lines.append(
            f"  {name:<28} {scores['precision']:7.4f} {scores['recall']:7.4f} {scores['f1']:7.4f} "
            f"{scores['support']:8d}"
        )
    return "\n".join(lines)
