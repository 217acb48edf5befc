"""A rule-based labeler for the 14 CheXpert observations (NegEx-style mention, negation and uncertainty detection).

It reads free-text chest X-ray reports, raw ("No pleural effusion. Heart size is normal.") or R2Gen-cleaned
("no pleural effusion . heart size is normal ."), and gives one code per observation of
``cxrgen.labels.CHEXPERT_OBSERVATIONS``: NOT_MENTIONED, POSITIVE, NEGATIVE or UNCERTAIN. The phrase lists are
this project's own (written against the IU-Xray reports); they are plain data below and can be extended per call
(``extra_phrases``) or replaced (``RuleBasedLabeler(...)``).

How a report is read:

1. **Text.** Lower-cased; apostrophes are dropped (the R2Gen cleaner deletes them); every other non-alphanumeric
   character except "?" and ";" separates words. The IU de-identification token "XXXX" stays an ordinary word:
   it never matches a phrase and never interrupts a cue's scope ("no XXXX of pleural effusion" is negative).
2. **Sentences** end at "." (not between digits) and at newlines, so raw and cleaned text split alike.
3. **Clauses.** A sentence is cut at ``CLAUSE_TERMINATORS`` ("but", "however", "although", "except", "which",
   "there is", ";", ...). A cue acts only inside its clause. Commas do *not* end a clause: IU reports list
   negated findings with commas hundreds of times ("no focal consolidation, pneumothorax, or pleural effusion"),
   and the R2Gen cleaner deletes commas, so a comma rule would also make raw and cleaned text disagree.
   ";" and "?" do count (as terminator and uncertainty cue), but only raw text has them.
4. **Phrases.** ``MENTION_PHRASES`` say an observation is present (unless a cue says otherwise);
   ``NORMAL_PHRASES`` say it is absent ("heart size is normal" -> Cardiomegaly NEGATIVE). Phrase syntax: words
   separated by spaces; the last word also matches its plural with "s"/"es"; ``*`` stands for up to
   ``MAX_GAP`` words ("heart * enlarged" matches "heart is mildly enlarged"). ``EXCLUDED_PHRASES`` hide
   look-alikes ("pericardial effusion" is not a pleural effusion).
5. **Cues.** Negation and uncertainty cues come as pre-cues (they govern mentions after them in the clause, or
   inside a wildcard mention: "heart is not enlarged") and post-cues (they govern mentions before them:
   "pneumothorax is not seen", "pneumonia cannot be excluded"). The longest cue wins where cues overlap
   ("cannot be excluded" is uncertainty, not negation; "no change" is a pseudo-cue that negates nothing).
   A mention takes the code of its nearest cue (a pre-cue on a tie); none means POSITIVE. A hedge inside a
   negation is negated: an uncertainty pre-cue after a negation pre-cue in the same clause counts as negation
   ("no opacity to suggest pneumonia", "no suspicious pulmonary opacity, pneumothorax or effusion" -> negative;
   about 250 IU sentences read like this, against a handful like "no change, may represent atelectasis").
6. **Aggregation** over all matches of a report, as CheXpert does: POSITIVE beats UNCERTAIN beats NEGATIVE.
7. **No Finding** (CheXpert's rule) is POSITIVE when no observation other than Support Devices is POSITIVE or
   UNCERTAIN, and NOT_MENTIONED otherwise. An empty report says nothing, so all 14 codes are NOT_MENTIONED.

Choices worth knowing (they differ between labelers, so they are stated here):

* "lungs are clear" -> Lung Opacity NEGATIVE only (it rules out opacities; consolidation, pneumonia, etc. are
  not named, so they stay not mentioned).
* A normal cardiomediastinal silhouette -> Enlarged Cardiomediastinum *and* Cardiomegaly NEGATIVE (the heart is
  part of that silhouette); an enlarged one -> Enlarged Cardiomediastinum only.
* "granuloma" (calcified or not), "nodule", "mass" -> Lung Lesion. CheXpert's own mention list may not name
  granulomas; here a granuloma is a focal lung lesion, which is also what the phantom generator draws.
  "granulomatous disease" names no lesion and is left out.
* "scarring" and "interstitial markings" -> Lung Opacity (as in CheXpert); "pleural thickening/scarring/plaque"
  -> Pleural Other; "blunting of the costophrenic angle" -> Pleural Effusion; clear pleural spaces -> Pleural
  Effusion and Pneumothorax NEGATIVE; intact bony structures -> Fracture NEGATIVE; old and healed fractures are
  POSITIVE fractures.
* "unlikely" is uncertainty (probable absence is still a hedge); "borderline" is uncertainty.
* Statements naming no observation ("no acute cardiopulmonary abnormality", "degenerative changes of the spine",
  "normal chest") label nothing, so such a report gets No Finding POSITIVE through the rule above.

This is a transparent approximation, not CheXpert or CheXbert: ``explain_report`` shows which phrase and cue
decided each code.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from cxrgen.labels import (
    CHEXPERT_OBSERVATIONS,
    NEGATIVE,
    NOT_MENTIONED,
    NUM_OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
)

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
MAX_GAP = 6

# Phrases that state the observation is present (the mention is then checked for negation and uncertainty).
MENTION_PHRASES = {
    "Enlarged Cardiomediastinum": [
        "enlarged cardiomediastinum",
        "enlarged cardiomediastinal silhouette",
        "cardiomediastinal silhouette * enlarged",
        "enlarged mediastinum",
        "mediastinum * enlarged",
        "mediastinal enlargement",
        "mediastinal widening",
        "widened mediastinum",
        "widening of the mediastinum",
        "mediastinum * widened",
        "enlarged mediastinal",
        "widened mediastinal",
    ],
    "Cardiomegaly": [
        "cardiomegaly",
        "enlarged heart",
        "heart * enlarged",
        "heart * enlargement",
        "cardiac enlargement",
        "enlarged cardiac silhouette",
        "enlarged cardiac",
        "cardiac silhouette * enlarged",
        "cardiac silhouette * large",
        "heart size * increased",
        "large heart",
        "heart * large",
        "enlargement of the cardiac silhouette",
        "enlargement of the heart",
    ],
    "Lung Opacity": [
        "opacity",
        "opacities",
        "opacification",
        "opacified",
        "infiltrate",
        "infiltration",
        "airspace disease",
        "air space disease",
        "airspace opacity",
        "air space opacity",
        "airspace density",
        "scarring",
        "scar",
        "interstitial markings",
        "interstitial prominence",
        "reticular",
        "reticulonodular",
        "ground glass",
        "haziness",
        "hazy",
    ],
    "Lung Lesion": [
        "nodule",
        "nodular",
        "nodular density",
        "nodular opacity",
        "mass",
        "granuloma",
        "lesion",
        "tumor",
        "neoplasm",
        "carcinoma",
        "malignancy",
        "metastasis",
        "metastases",
        "metastatic",
        "cavitary lesion",
        "cavitation",
    ],
    "Edema": [
        "edema",
        "vascular congestion",
        "pulmonary congestion",
        "venous congestion",
        "congestion",
        "congestive heart failure",
        "chf",
        "fluid overload",
        "kerley",
        "cephalization",
        "interstitial edema",
    ],
    "Consolidation": ["consolidation", "consolidative", "consolidated"],
    "Pneumonia": [
        "pneumonia",
        "bronchopneumonia",
        "pneumonitis",
        "infection",
        "infectious process",
        "infectious",
    ],
    "Atelectasis": [
        "atelectasis",
        "atelectases",
        "atelectatic",
        "lobar collapse",
        "lobe collapse",
        "lung collapse",
        "collapsed lung",
        "volume loss",
    ],
    "Pneumothorax": ["pneumothorax", "pneumothoraces", "pneumothoraxes", "hydropneumothorax"],
    "Pleural Effusion": [
        "pleural effusion",
        "effusion",
        "pleural fluid",
        "hydropneumothorax",
        "hydrothorax",
        "blunting of the * costophrenic",
        "costophrenic * blunting",
        "costophrenic * blunted",
    ],
    "Pleural Other": [
        "pleural thickening",
        "pleural scarring",
        "pleural plaque",
        "pleural calcification",
        "pleural parenchymal scarring",
        "fibrothorax",
        "pleural reaction",
    ],
    "Fracture": ["fracture", "fractured", "compression deformity", "compression deformities"],
    "Support Devices": [
        "pacemaker",
        "pacer",
        "defibrillator",
        "aicd",
        "sternotomy",
        "sternotomy wires",
        "median sternotomy",
        "endotracheal tube",
        "et tube",
        "tracheostomy",
        "nasogastric tube",
        "ng tube",
        "orogastric tube",
        "feeding tube",
        "enteric tube",
        "dobhoff",
        "chest tube",
        "picc",
        "picc line",
        "central line",
        "central venous catheter",
        "venous catheter",
        "catheter",
        "port a cath",
        "portacath",
        "power port",
        "swan ganz",
        "cabg",
        "valve replacement",
        "prosthetic valve",
        "stent",
        "surgical clip",
        "lead",
        "hardware",
        "drain",
        "tube",
        "wire",
    ],
}

# Phrases that state the observation is absent: they label NEGATIVE directly, whatever cue surrounds them.
NORMAL_PHRASES = {
    "Enlarged Cardiomediastinum": [
        "cardiomediastinal * normal",
        "cardiomediastinal * unremarkable",
        "cardio mediastinal * normal",
        "cardio mediastinal * unremarkable",
        "normal cardiomediastinal",
        "mediastinum * normal",
        "mediastinum * unremarkable",
        "mediastinal * normal",
        "mediastinal * unremarkable",
        "normal mediastinal",
        "normal mediastinum",
        "mediastinum * within normal limits",
    ],
    "Cardiomegaly": [
        "heart size * normal",
        "heart * normal",
        "normal heart",
        "normal size heart",
        "heart * unremarkable",
        "normal heart size",
        "cardiac * normal",
        "cardiac * unremarkable",
        "normal cardiac",
        "cardiomediastinal * normal",
        "cardiomediastinal * unremarkable",
        "cardio mediastinal * normal",
        "cardio mediastinal * unremarkable",
        "normal cardiomediastinal",
    ],
    "Lung Opacity": ["lungs * clear", "lung * clear", "clear lungs", "clear lung"],
    "Pleural Effusion": [
        "pleural spaces * clear",
        "pleural space * clear",
        "costophrenic angles * sharp",
        "costophrenic * clear",
    ],
    "Pneumothorax": ["pleural spaces * clear", "pleural space * clear"],
    "Fracture": [
        "osseous structures * intact",
        "bony structures * intact",
        "skeletal structures * intact",
        "bones * intact",
        "bony thorax * intact",
    ],
}

# Look-alikes that must not count as a mention of anything.
EXCLUDED_PHRASES = [
    "pericardial effusion",
    "joint effusion",
    "knee effusion",
    "granulomatous infection",
    "granulomatous disease",
    "mass effect",
    "body mass",
    "calcified lymph node",
    "lead to",
    "leads to",
    "tube feeding",
]

PRE_NEGATION_CUES = [
    "no",
    "not",
    "without",
    "negative for",
    "free of",
    "clear of",
    "absence of",
    "absent",
    "no evidence of",
    "no sign of",
    "no signs of",
    "resolution of",
    "resolved",
    "removal of",
    "removed",
    "rather than",
    "never",
    "nor",
    "neither",
    "no longer",
]
POST_NEGATION_CUES = [
    "is not seen",
    "are not seen",
    "not seen",
    "not identified",
    "not visualized",
    "not present",
    "not evident",
    "is absent",
    "are absent",
    "absent",
    "has resolved",
    "have resolved",
    "resolved",
    "ruled out",
    "has been removed",
    "have been removed",
    "removed",
    "not appreciated",
    "is negative",
    "are negative",
]
PRE_UNCERTAINTY_CUES = [
    "may",
    "might",
    "could",
    "possible",
    "possibly",
    "probable",
    "probably",
    "likely",
    "most likely",
    "suggest",
    "suggests",
    "suggesting",
    "suggestive of",
    "to indicate",
    "suspicious for",
    "suspicion for",
    "suspicious",
    "suspected",
    "concerning for",
    "concern for",
    "questionable",
    "question of",
    "?",
    "versus",
    "vs",
    "differential",
    "consider",
    "borderline",
    "equivocal",
    "indeterminate",
    "presumably",
    "presumed",
    "perhaps",
    "cannot exclude",
    "can not exclude",
    "cannot rule out",
    "can not rule out",
    "rule out",
    "difficult to exclude",
]
POST_UNCERTAINTY_CUES = [
    "cannot be excluded",
    "can not be excluded",
    "not excluded",
    "is not excluded",
    "cannot be ruled out",
    "can not be ruled out",
    "not ruled out",
    "is possible",
    "are possible",
    "is suspected",
    "are suspected",
    "is questioned",
    "unlikely",
    "less likely",
    "versus",
    "vs",
    "is likely",
    "are likely",
    "not entirely excluded",
    "is not entirely excluded",
    "could be present",
]
# Cues that look like negation but negate nothing; matching them stops "no" from starting a scope.
PSEUDO_CUES = [
    "no change",
    "no significant change",
    "no interval change",
    "no increase",
    "not changed",
    "not only",
    "not necessarily",
    "without change",
    "no significant interval change",
    "gram negative",
    "not significantly changed",
]
CLAUSE_TERMINATORS = [
    "but",
    "however",
    "although",
    "though",
    "except",
    "apart from",
    "aside from",
    "which",
    "whereas",
    "there is",
    "there are",
    "there has been",
    "there have been",
    ";",
]

_PRE, _POST, _BOTH = "pre", "post", "both"
# CheXpert's aggregation over mentions: positive beats uncertain beats negative.
_PRIORITY = {NOT_MENTIONED: 0, NEGATIVE: 1, UNCERTAIN: 2, POSITIVE: 3}
_WORD = re.compile(r"[a-z0-9]+|[?;]")
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|\n")


@dataclass(frozen=True)
class Evidence:
    """One labelling decision: a phrase matched in a clause and the code it gave its observation."""

    observation: str
    code: int
    phrase: str
    matched: str
    clause: str
    cue: str | None


def _phrase_pattern(phrase):
    """Compile a phrase (words, "*" gaps, plural on the last word) into a regex over space-joined words."""
    words = phrase.split()
    if not words or words[0] == "*" or words[-1] == "*":
        raise ValueError(f"Phrase {phrase!r}: expected words, with '*' only between two words.")
    parts = []
    for index, word in enumerate(words):
        if word == "*":
            parts.append(f"(?:\\S+ ){{0,{MAX_GAP}}}")
            continue
        escaped = re.escape(word) + ("(?:s|es)?" if index == len(words) - 1 else "")
        parts.append(escaped + ("" if index == len(words) - 1 else " "))
    return re.compile(r"(?<!\S)" + "".join(parts) + r"(?!\S)")


def _alternation(phrases):
    """One regex matching any of the given literal word sequences, longest first so overlaps go to the longest."""
    ordered = sorted(set(phrases), key=lambda p: (-len(p.split()), -len(p)))
    return re.compile(r"(?<!\S)(?:" + "|".join(re.escape(p) for p in ordered) + r")(?!\S)")


def _words(text):
    return _WORD.findall(text.lower().replace("'", "").replace("\u2019", ""))


def split_sentences(text):
    """Split a raw or cleaned report into word lists, one per non-empty sentence."""
    return [words for words in (_words(part) for part in _SENTENCE_END.split(text)) if words]


def _validate_phrase_table(table, name):
    for observation, phrases in table.items():
        if observation not in CHEXPERT_OBSERVATIONS or observation == NO_FINDING:
            valid = [o for o in CHEXPERT_OBSERVATIONS if o != NO_FINDING]
            raise ValueError(
                f"{name}: unknown observation {observation!r}; expected one of {valid} "
                f"('No Finding' is derived from the others and takes no phrases)."
            )
        if isinstance(phrases, str) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise ValueError(f"{name}[{observation!r}]: expected a list of non-empty phrase strings, got {phrases!r}.")


class RuleBasedLabeler:
    """Labels reports with the 14 CheXpert observations from phrase and cue lists (see the module docstring)."""

    def __init__(self, mention_phrases=None, normal_phrases=None, extra_phrases=None):
        """Build a labeler.

        Args:
            mention_phrases: observation -> phrases stating it is present (default ``MENTION_PHRASES``).
            normal_phrases: observation -> phrases stating it is absent (default ``NORMAL_PHRASES``).
            extra_phrases: observation -> additional mention phrases, added to ``mention_phrases``.
        """
        mention_phrases = MENTION_PHRASES if mention_phrases is None else mention_phrases
        normal_phrases = NORMAL_PHRASES if normal_phrases is None else normal_phrases
        extra_phrases = extra_phrases or {}
        for table, name in (
            (mention_phrases, "mention_phrases"),
            (normal_phrases, "normal_phrases"),
            (extra_phrases, "extra_phrases"),
        ):
            _validate_phrase_table(table, name)
        self._patterns = []
        for table, kind in ((mention_phrases, "mention"), (extra_phrases, "mention"), (normal_phrases, "normal")):
            for observation, phrases in table.items():
                for phrase in phrases:
                    self._patterns.append((observation, kind, phrase, _phrase_pattern(phrase.lower())))
        self._excluded = _alternation(EXCLUDED_PHRASES)
        self._terminators = _alternation(CLAUSE_TERMINATORS)
        self._cue_types = {}
        for cues, cue_type in (
            (PRE_NEGATION_CUES, (NEGATIVE, _PRE)),
            (PRE_UNCERTAINTY_CUES, (UNCERTAIN, _PRE)),
            (POST_NEGATION_CUES, (NEGATIVE, _POST)),
            (POST_UNCERTAINTY_CUES, (UNCERTAIN, _POST)),
            (PSEUDO_CUES, (None, None)),
        ):
            for cue in cues:
                previous = self._cue_types.get(cue)
                if previous is not None and previous[0] != cue_type[0]:
                    raise ValueError(f"Cue {cue!r} is listed with two different meanings.")
                # A cue listed both before and after its target ("versus", "absent") governs both directions.
                self._cue_types[cue] = cue_type if previous is None else (cue_type[0], _BOTH)
        self._cues = _alternation(self._cue_types)

    def explain(self, text):
        """Every phrase match in ``text`` with the code it gave (aggregation and No Finding are not applied)."""
        if not isinstance(text, str):
            raise TypeError(f"A report must be a str, got {type(text).__name__}.")
        evidence = []
        for words in split_sentences(text):
            sentence = " ".join(words)
            for clause in (c.strip() for c in self._terminators.split(sentence)):
                if clause:
                    evidence.extend(self._label_clause(clause))
        return evidence

    def label(self, text):
        """The 14 codes (CheXpert order) for one report."""
        evidence = self.explain(text)
        if not text.strip():
            return [NOT_MENTIONED] * NUM_OBSERVATIONS
        codes = dict.fromkeys(CHEXPERT_OBSERVATIONS, NOT_MENTIONED)
        for item in evidence:
            if _PRIORITY[item.code] > _PRIORITY[codes[item.observation]]:
                codes[item.observation] = item.code
        findings = [o for o in CHEXPERT_OBSERVATIONS if o not in (NO_FINDING, SUPPORT_DEVICES)]
        abnormal = any(codes[o] in (POSITIVE, UNCERTAIN) for o in findings)
        codes[NO_FINDING] = NOT_MENTIONED if abnormal else POSITIVE
        return [codes[o] for o in CHEXPERT_OBSERVATIONS]

    def _label_clause(self, clause):
        # Excluded look-alikes are blanked with same-length filler so character offsets stay valid.
        masked = self._excluded.sub(lambda m: re.sub(r"\S", "_", m.group()), clause)
        cues = []
        for match in self._cues.finditer(masked):
            code, direction = self._cue_types[match.group()]
            if code is not None:
                cues.append((match.start(), match.end(), code, direction, match.group()))
        evidence = []
        for observation, kind, phrase, pattern in self._patterns:
            for match in pattern.finditer(masked):
                if kind == "normal":
                    code, cue = NEGATIVE, None
                else:
                    code, cue = self._classify(match.start(), match.end(), cues)
                evidence.append(Evidence(observation, code, phrase, match.group(), clause, cue))
        return evidence

    @staticmethod
    def _classify(start, end, cues):
        """The code of a mention at [start, end): its nearest governing cue decides, POSITIVE without one."""
        best = None
        for cue_start, cue_end, code, direction, text in cues:
            if cue_start >= start and cue_end <= end:
                distance, is_pre = 0, True
            elif cue_end <= start and direction in (_PRE, _BOTH):
                distance, is_pre = start - cue_end, True
            elif cue_start >= end and direction in (_POST, _BOTH):
                distance, is_pre = cue_start - end, False
            else:
                continue
            if (
                code == UNCERTAIN
                and is_pre
                and any(c[2] == NEGATIVE and c[3] != _POST and c[1] <= cue_start for c in cues)
            ):
                code = NEGATIVE
            key = (distance, not is_pre)
            if best is None or key < best[0]:
                best = (key, code, text)
        return (POSITIVE, None) if best is None else (best[1], best[2])


@lru_cache(maxsize=1)
def _default_labeler():
    return RuleBasedLabeler()


def _labeler(extra_phrases):
    return _default_labeler() if not extra_phrases else RuleBasedLabeler(extra_phrases=extra_phrases)


def label_report(text, extra_phrases=None):
    """The 14 CheXpert codes (NOT_MENTIONED/POSITIVE/NEGATIVE/UNCERTAIN) for one raw or cleaned report.

    ``extra_phrases`` (observation -> list of mention phrases) extends the built-in ``MENTION_PHRASES``.
    """
    return _labeler(extra_phrases).label(text)


def label_reports(texts, extra_phrases=None):
    """``label_report`` for each report of ``texts``."""
    labeler = _labeler(extra_phrases)
    return [labeler.label(text) for text in texts]


def explain_report(text, extra_phrases=None):
    """The evidence behind ``label_report(text)``: each matched phrase, its clause, the deciding cue and code."""
    return _labeler(extra_phrases).explain(text)
