"""A rule-based labeler for the 14 CheXpert observations that follows the CheXpert labeler's conventions.

It reads free-text chest X-ray reports, raw ("No pleural effusion. Heart size is normal.") or R2Gen-cleaned
("no pleural effusion . heart size is normal ."), and gives one code per observation of
``cxrgen.labels.CHEXPERT_OBSERVATIONS``: NOT_MENTIONED, POSITIVE, NEGATIVE or UNCERTAIN. Clinical-efficacy
metrics in the literature label reports with the CheXpert labeler (Irvin et al., 2019) or with CheXbert, which was
trained to imitate it, so this labeler takes CheXpert's decisions as its facts: which phrases mention each
observation (its ``phrases/mention`` and ``phrases/unmention`` lists), which phrases only rule out "No Finding"
(its ``no_finding`` list), and its NegBio negation and uncertainty patterns with their order. The code is this
project's own: word phrases and cue scopes instead of CheXpert's dependency parse, so it runs in a few
milliseconds per report without Java or a parser model. ``explain_report`` shows which phrase and cue decided each
code. The phrase lists are plain data below; they can be extended per call (``extra_phrases``) or replaced
(``RuleBasedLabeler(...)``).

How a report is read:

1. **Text.** Lower-cased; apostrophes are dropped (the R2Gen cleaner deletes them); every other non-alphanumeric
   character except "?" and ";" separates words. The IU de-identification token "XXXX" stays an ordinary word:
   it never matches a phrase and never interrupts a cue's scope ("no XXXX of pleural effusion" is negative).
2. **Sentences** end at "." (not between digits) and at newlines, so raw and cleaned text split alike.
3. **Clauses.** A sentence is cut at ``CLAUSE_TERMINATORS`` ("but", "however", "although", "except", "which",
   "there is", ";", ...). A cue acts only inside its clause. Commas do *not* end a clause: IU reports list
   negated findings with commas hundreds of times ("no focal consolidation, pneumothorax, or pleural effusion"),
   and the R2Gen cleaner deletes commas, so a comma rule would also make raw and cleaned text disagree.
4. **Phrases.** Words separated by spaces; the last word also matches its plural with "s"/"es"; ``*`` stands for
   up to ``MAX_GAP`` words ("heart * enlarged" matches "heart is mildly enlarged"). CheXpert matches substrings;
   here whole words are matched and the word forms are listed ("atelecta" -> atelectasis, atelectases,
   atelectatic), so that "tube" does not match "tuberculosis" nor "plate" "platelike atelectasis".

   * ``MENTION_PHRASES`` state an observation (POSITIVE unless a cue says otherwise). ``HEDGED_PHRASES`` are
     mentions that CheXpert reads as UNCERTAIN on their own, through its post-negation uncertainty patterns:
     vascular / pulmonary congestion, indistinctness and vascular prominence (Edema), a "stable" or "unchanged"
     silhouette, mediastinum or heart size (Enlarged Cardiomediastinum, Cardiomegaly) and a "borderline" heart
     size; a negation still makes them NEGATIVE.
   * ``NORMAL_PHRASES`` say the structure CheXpert's mention names is normal, unremarkable or within normal limits
     ("heart size is normal" -> Cardiomegaly NEGATIVE; "normal mediastinal contours" -> Enlarged Cardiomediastinum
     NEGATIVE). In a clause where one matches, the hedged phrases of that observation are dropped, as CheXpert
     tries negation before post-negation uncertainty ("normal and stable cardiomediastinal contours" -> NEGATIVE).
   * ``UNMENTION_PHRASES`` hide look-alikes per observation ("calcified nodule" is not a Lung Lesion,
     "pericardial effusion" not a Pleural Effusion, "pleural scarring" not a Lung Opacity, as in CheXpert;
     "mass effect", "body mass" and joint effusions, which CheXpert's substring matching would count, are hidden
     too).
   * ``NO_FINDING_PHRASES`` are CheXpert's other findings (granuloma, emphysema, degenerative change,
     calcification, scoliosis, blunting, elevation, hernia, ...): they label none of the 14 observations, but
     stated positive or uncertain they rule out No Finding.
5. **Cues**, CheXpert's three classes in its order of precedence: pre-negation uncertainty ("cannot exclude",
   "not excluded", "cannot rule out", "no new"), negation ("no", "without", "free of", "rule out", "history of",
   "removal of", "resolved", ...) and post-negation uncertainty ("may", "could", "possible", "probable",
   "suspicious for", "concern for", "secondary to", "versus", "X or Y", "less likely", "not appreciated",
   "obscured", ...). A cue comes as a pre-cue (it governs mentions after it in the clause, or inside a wildcard
   mention: "heart is not enlarged") or a post-cue (it governs mentions before it: "pneumothorax is not seen").
   The longest cue wins where cues overlap ("cannot be excluded" is uncertainty, not negation; "no change" is a
   pseudo-cue that negates nothing). A mention takes the code of its nearest governing cue (a pre-cue on a tie),
   POSITIVE without one, except that a post-negation uncertainty cue loses to any negation cue governing the same
   mention ("no opacity to suggest pneumonia", "no pneumothorax or effusion" -> NEGATIVE): CheXpert looks for
   negation before that kind of uncertainty. Pre-negation uncertainty cues are never overridden.
6. **Aggregation** over all matches of a report, as CheXpert does: POSITIVE beats UNCERTAIN beats NEGATIVE. A
   positive or uncertain "chf" or "heart failure" (an Edema mention) also makes Cardiomegaly UNCERTAIN, as in
   CheXpert.
7. **No Finding** (CheXpert's rule) is POSITIVE when no mention other than a Support Devices one, the No Finding
   phrases included, is POSITIVE or UNCERTAIN, and NOT_MENTIONED otherwise; an empty report therefore gets No
   Finding POSITIVE and nothing else, as CheXpert gives it.

Conventions worth knowing (all CheXpert's):

* "granuloma" and "calcified nodule" are not Lung Lesions (they only rule out No Finding); Lung Lesion is a mass,
  nodule, nodular density / opacity, lump, cavitary lesion, carcinoma, neoplasm or tumor.
* "The lungs are clear", "the pleural spaces are clear" and "the bones are intact" name no observation, and a
  normal cardiomediastinal silhouette is an Enlarged Cardiomediastinum statement only; so these leave Lung
  Opacity, Pleural Effusion, Pneumothorax, Fracture and Cardiomegaly NOT_MENTIONED.
* "likely", "unlikely", "suggestive of", "borderline" (except for heart size) and "?" are not uncertainty cues.
* Scarring, interstitial markings and peribronchial thickening are Lung Opacity; "fibrosis" and pleural
  thickening or scarring are Pleural Other; blunted costophrenic angles and volume loss are not Pleural Effusion
  or Atelectasis (they rule out No Finding); sternotomy wires and surgical clips are not Support Devices.

Deliberate differences, each an option that is off by default (``RuleBasedLabeler(...)`` and the functions below
take them as keyword arguments):

* ``granuloma_as_lesion``: "granuloma" and "calcified nodule" count as Lung Lesion (this labeler's earlier
  default; on IU-Xray it multiplies Lung Lesion positives several times over).
* ``implied_negatives``: clear lungs -> Lung Opacity NEGATIVE, clear pleural spaces or sharp costophrenic angles
  -> Pleural Effusion (and Pneumothorax) NEGATIVE, intact bones -> Fracture NEGATIVE, a normal cardiomediastinal
  silhouette -> Cardiomegaly NEGATIVE as well.
* ``extended_hedges``: "likely", "probably", "suggest(ive of)", "borderline", "equivocal", "indeterminate",
  "presumed", "perhaps", "?" and "unlikely" are uncertainty cues too.

``implied_negatives`` only adds NEGATIVE codes (and, like any normal phrase, drops a hedged mention of the same
observation in its clause), so it leaves the positives that the CE metrics score unchanged on IU-Xray
(``benchmarks/LABELER.md``); the other two options change positives.
This is a transparent approximation of CheXpert, not CheXpert or CheXbert (``benchmarks/LABELER.md`` measures it
against a hand reading of IU-Xray reports).
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from cxrgen.labels import (
    CHEXPERT_OBSERVATIONS,
    NEGATIVE,
    NOT_MENTIONED,
    POSITIVE,
    UNCERTAIN,
)
from cxrgen.parallel import map_chunks, worker_count

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
MAX_GAP = 6
# Reports repeat a lot (IU-Xray: 2,266 distinct texts in 2,955 studies; normal reports even more in MIMIC-CXR), and
# an evaluation labels the same references once per system: each labeler keeps the codes of this many recent texts.
LABEL_CACHE_SIZE = 65536
# label_reports labels in worker processes from this many distinct reports per process (a worker costs ~0.1 s to
# start, the labeler ~1 ms per report).
MIN_REPORTS_PER_PROCESS = 1000

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
        "opacify",
        "decreased translucency",
        "increased density",
        "airspace disease",
        "air space disease",
        "infiltrate",
        "infiltration",
        "interstitial marking",
        "interstitial pattern",
        "interstitial lung",
        "reticular pattern",
        "reticular marking",
        "reticulation",
        "parenchymal scarring",
        "peribronchial thickening",
        "wall thickening",
        "scar",
        "scarring",
    ],
    "Lung Lesion": [
        "mass",
        "nodular density",
        "nodular densities",
        "nodular opacity",
        "nodular opacities",
        "nodular opacification",
        "nodule",
        "lump",
        "cavitary lesion",
        "carcinoma",
        "neoplasm",
        "tumor",
    ],
    "Edema": ["edema", "edematous", "heart failure", "chf"],
    "Consolidation": ["consolidation", "consolidative", "consolidated", "consolidating"],
    "Pneumonia": ["pneumonia", "bronchopneumonia", "infection", "infectious"],
    "Atelectasis": ["atelectasis", "atelectases", "atelectatic", "collapse", "collapsed"],
    "Pneumothorax": ["pneumothorax", "pneumothoraces", "pneumothoraxes", "hydropneumothorax"],
    "Pleural Effusion": ["effusion", "pleural fluid"],
    "Pleural Other": [
        "pleural thickening",
        "fibrosis",
        "fibrothorax",
        "pleural scar",
        "pleural scarring",
        "pleural parenchymal scar",
        "pleural parenchymal scarring",
        "pleuro parenchymal scar",
        "pleuro parenchymal scarring",
        "pleuro pericardial scar",
        "pleuro pericardial scarring",
    ],
    "Fracture": ["fracture", "fractured"],
    "Support Devices": [
        "pacer",
        "line",
        "picc",
        "tube",
        "valve",
        "catheter",
        "pacemaker",
        "hardware",
        "arthroplasty",
        "arthroplasties",
        "marker",
        "icd",
        "aicd",
        "defibrillator",
        "device",
        "drain",
        "plate",
        "screw",
        "cannula",
        "apparatus",
        "coil",
        "support",
        "equipment",
        "mediport",
    ],
}

# Mentions CheXpert reads as uncertain when nothing negates them (its post-negation uncertainty patterns that match
# the mention itself).
HEDGED_PHRASES = {
    "Enlarged Cardiomediastinum": [
        "stable cardiomediastinal",
        "cardiomediastinal * stable",
        "unchanged cardiomediastinal",
        "cardiomediastinal * unchanged",
        "stable mediastinal",
        "mediastinal * stable",
        "unchanged mediastinal",
        "mediastinal * unchanged",
        "stable mediastinum",
        "mediastinum * stable",
        "mediastinum * unchanged",
    ],
    "Cardiomegaly": [
        "stable heart",
        "heart * stable",
        "heart * unchanged",
        "unchanged heart size",
        "stable cardiac",
        "cardiac silhouette * stable",
        "cardiac silhouette * unchanged",
        "unchanged cardiac",
        "borderline heart size",
        "heart size * borderline",
    ],
    "Edema": ["vascular congestion", "pulmonary congestion", "indistinctness", "vascular prominence"],
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
        "contour * normal",
        "contour * unremarkable",
        "normal * contour",
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
    ],
}

# ``implied_negatives``: statements that name no CheXpert mention but rule an observation out.
IMPLIED_NEGATIVE_PHRASES = {
    "Cardiomegaly": [
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

# Look-alikes that are no mention of the observation (masked before its phrases are matched; same phrase syntax).
UNMENTION_PHRASES = {
    "Lung Lesion": ["calcified nodule", "massive", "mass effect", "body mass"],
    "Lung Opacity": ["pleural scar", "pleural scarring"],
    "Pleural Effusion": ["pericardial effusion", "joint effusion", "knee effusion"],
}
# ``granuloma_as_lesion``: the Lung Lesion mentions it adds (and the unmention it lifts).
GRANULOMA_LESION_PHRASES = ["granuloma", "calcified nodule"]

# CheXpert's "No Finding" mentions: findings outside the 14 observations that, positive or uncertain, rule out No
# Finding. Word forms of its substrings ("calcifi", "degenera", "prominen", ...) are listed out.
NO_FINDING_PHRASES = [
    "emphysema",
    "blunt",
    "blunted",
    "blunting",
    "density",
    "densities",
    "elevation",
    "eventration",
    "scoliosis",
    "levoscoliosis",
    "dextroscoliosis",
    "degenerative",
    "degeneration",
    "calcified",
    "calcification",
    "calcific",
    "hyperinflation",
    "hyperinflated",
    "bronchospasm",
    "asthma",
    "hernia",
    "copd",
    "plaque",
    "osteophytosis",
    "aortic disease",
    "bronchiolitis",
    "airways disease",
    "thickening",
    "cephalization",
    "aspiration",
    "bullae",
    "contusion",
    "atherosclerosis",
    "atherosclerotic",
    "osteopenia",
    "metastasis",
    "granuloma",
    "granulomatous",
    "pneumomediastinum",
    "pneumoperitoneum",
    "osteodystrophy",
    "cuffing",
    "irregular lucency",
    "inflammation",
    "inflammatory",
    "inflamed",
    "fissure",
    "hypertension",
    "prominent",
    "prominence",
    "kyphosis",
    "defibrillator",
    "hyperexpansion",
    "bullet",
    "reticular",
    "reticulation",
    "reticulated",
    "thoracentesis",
    "bronchitis",
    "volume loss",
    "deformity",
    "deformities",
    "hemorrhage",
    "hematoma",
    "radiopaque",
    "aerophagia",
    "arthropathy",
    "tracheostomy",
]
# Edema mentions that, positive or uncertain, make Cardiomegaly uncertain (CheXpert's exception).
HEART_FAILURE_PHRASES = ("chf", "heart failure")

PRE_NEGATION_CUES = [
    "no",
    "not",
    "without",
    "negative for",
    "free of",
    "clear of",
    "cleared",
    "absence of",
    "absent",
    "no evidence of",
    "no sign of",
    "no signs of",
    "resolution of",
    "disappearance of",
    "drainage of",
    "resolved",
    "removal of",
    "removed",
    "history of",
    "rule out",
    "exclude",
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
    "cleared",
    "ruled out",
    "excluded",
    "has been removed",
    "have been removed",
    "removed",
    "is negative",
    "are negative",
    "previously demonstrated",
    "previously visualized",
]
# CheXpert's pre-negation uncertainty: matched before negation, so these win over any negation cue.
OVERRIDING_PRE_UNCERTAINTY_CUES = [
    "cannot exclude",
    "can not exclude",
    "cannot rule out",
    "can not rule out",
    "no evidence to rule out",
    "no new",
]
OVERRIDING_POST_UNCERTAINTY_CUES = [
    "cannot be excluded",
    "can not be excluded",
    "not excluded",
    "is not excluded",
    "not entirely excluded",
    "cannot be ruled out",
    "can not be ruled out",
    "not ruled out",
]
PRE_UNCERTAINTY_CUES = [
    "may",
    "might",
    "could",
    "would",
    "maybe",
    "possible",
    "possibly",
    "presumably",
    "probable",
    "questionable",
    "question of",
    "suggestion of",
    "suspect",
    "suspected",
    "suspicious",
    "suspicious for",
    "suspicion for",
    "concerning for",
    "concern for",
    "worrisome for",
    "favor",
    "favored",
    "consider",
    "considered",
    "secondary to",
    "versus",
    "vs",
    "or",
    "differential",
    "correlate clinically",
    "clinical correlation",
    "obscuring",
    "obscured",
]
POST_UNCERTAINTY_CUES = [
    "is possible",
    "are possible",
    "is suspected",
    "are suspected",
    "is questioned",
    "is favored",
    "less likely",
    "versus",
    "vs",
    "or",
    "could be present",
    "may be present",
    "might be present",
    "not appreciated",
    "not clearly seen",
    "poorly evaluated",
    "incompletely evaluated",
    "not well visualized",
    "not well evaluated",
    "obscured",
]
# ``extended_hedges``: hedges CheXpert's patterns do not list.
EXTENDED_PRE_UNCERTAINTY_CUES = [
    "likely",
    "most likely",
    "probably",
    "suggest",
    "suggests",
    "suggesting",
    "suggestive of",
    "to indicate",
    "borderline",
    "equivocal",
    "indeterminate",
    "presumed",
    "perhaps",
    "?",
    "difficult to exclude",
]
EXTENDED_POST_UNCERTAINTY_CUES = ["unlikely", "is likely", "are likely"]
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
OPTIONS = ("granuloma_as_lesion", "implied_negatives", "extended_hedges")

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


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    code: int
    direction: str
    text: str
    # Pre-negation uncertainty: never overridden by negation.
    strong: bool


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


def _check_text(text):
    if not isinstance(text, str):
        raise TypeError(f"A report must be a str, got {type(text).__name__}.")


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


def _mask(pattern, text):
    """Blank ``pattern``'s matches with same-length filler so that character offsets stay valid."""
    return pattern.sub(lambda m: re.sub(r"\S", "_", m.group()), text)


class RuleBasedLabeler:
    """Labels reports with the 14 CheXpert observations from phrase and cue lists (see the module docstring)."""

    def __init__(
        self,
        mention_phrases: dict[str, list[str]] | None = None,
        normal_phrases: dict[str, list[str]] | None = None,
        extra_phrases: dict[str, list[str]] | None = None,
        *,
        granuloma_as_lesion: bool = False,
        implied_negatives: bool = False,
        extended_hedges: bool = False,
    ):
        """Build a labeler.

        Args:
            mention_phrases: observation -> phrases stating it is present (default ``MENTION_PHRASES``).
            normal_phrases: observation -> phrases stating it is absent (default ``NORMAL_PHRASES``).
            extra_phrases: observation -> additional mention phrases, added to ``mention_phrases``.
            granuloma_as_lesion: count "granuloma" and "calcified nodule" as Lung Lesion (not CheXpert's rule).
            implied_negatives: label ``IMPLIED_NEGATIVE_PHRASES`` NEGATIVE ("lungs are clear" -> Lung Opacity).
            extended_hedges: add ``EXTENDED_*_UNCERTAINTY_CUES`` ("likely", "suggestive of", ...) to the cues.
        """
        mention_phrases = MENTION_PHRASES if mention_phrases is None else mention_phrases
        normal_phrases = NORMAL_PHRASES if normal_phrases is None else normal_phrases
        extra_phrases = dict(extra_phrases or {})
        for table, name in (
            (mention_phrases, "mention_phrases"),
            (normal_phrases, "normal_phrases"),
            (extra_phrases, "extra_phrases"),
        ):
            _validate_phrase_table(table, name)
        unmentions = {observation: list(phrases) for observation, phrases in UNMENTION_PHRASES.items()}
        if granuloma_as_lesion:
            extra_phrases["Lung Lesion"] = list(extra_phrases.get("Lung Lesion", [])) + GRANULOMA_LESION_PHRASES
            unmentions["Lung Lesion"] = [p for p in unmentions["Lung Lesion"] if p not in GRANULOMA_LESION_PHRASES]
        tables = [(mention_phrases, "mention"), (extra_phrases, "mention"), (HEDGED_PHRASES, "hedged")]
        tables.append((normal_phrases, "normal"))
        if implied_negatives:
            tables.append((IMPLIED_NEGATIVE_PHRASES, "normal"))
        self._patterns = []
        for table, kind in tables:
            for observation, phrases in table.items():
                for phrase in phrases:
                    self._patterns.append((observation, kind, phrase, _phrase_pattern(phrase.lower())))
        for phrase in NO_FINDING_PHRASES:
            self._patterns.append((NO_FINDING, "mention", phrase, _phrase_pattern(phrase)))
        self._unmentions = {
            observation: re.compile("|".join(_phrase_pattern(p).pattern for p in phrases))
            for observation, phrases in unmentions.items()
        }
        self._terminators = _alternation(CLAUSE_TERMINATORS)
        pre_uncertainty = PRE_UNCERTAINTY_CUES + (EXTENDED_PRE_UNCERTAINTY_CUES if extended_hedges else [])
        post_uncertainty = POST_UNCERTAINTY_CUES + (EXTENDED_POST_UNCERTAINTY_CUES if extended_hedges else [])
        self._cue_types = {}
        for cues, code, direction, strong in (
            (OVERRIDING_PRE_UNCERTAINTY_CUES, UNCERTAIN, _PRE, True),
            (OVERRIDING_POST_UNCERTAINTY_CUES, UNCERTAIN, _POST, True),
            (PRE_NEGATION_CUES, NEGATIVE, _PRE, False),
            (POST_NEGATION_CUES, NEGATIVE, _POST, False),
            (pre_uncertainty, UNCERTAIN, _PRE, False),
            (post_uncertainty, UNCERTAIN, _POST, False),
            (PSEUDO_CUES, None, None, False),
        ):
            for cue in cues:
                previous = self._cue_types.get(cue)
                if previous is not None and previous[0] != code:
                    raise ValueError(f"Cue {cue!r} is listed with two different meanings.")
                # A cue listed both before and after its target ("versus", "or") governs both directions.
                self._cue_types[cue] = (code, direction if previous is None else _BOTH, strong)
        self._cues = _alternation(self._cue_types)
        self._cached_codes = lru_cache(maxsize=LABEL_CACHE_SIZE)(self._codes)

    def explain(self, text: str) -> list[Evidence]:
        """Every phrase match in ``text`` with the code it gave (aggregation and No Finding are not applied).

        Matches of ``NO_FINDING_PHRASES`` appear with the observation "No Finding"; a positive or uncertain "chf" or
        "heart failure" adds an UNCERTAIN Cardiomegaly item.
        """
        _check_text(text)
        evidence = []
        for words in split_sentences(text):
            sentence = " ".join(words)
            for clause in (c.strip() for c in self._terminators.split(sentence)):
                if clause:
                    evidence.extend(self._label_clause(clause))
        return evidence

    def label(self, text: str) -> list[int]:
        """The 14 codes (CheXpert order) for one report."""
        _check_text(text)
        return list(self._cached_codes(text))

    def _codes(self, text):
        codes = dict.fromkeys(CHEXPERT_OBSERVATIONS, NOT_MENTIONED)
        abnormal = False
        for item in self.explain(text):
            if item.observation != SUPPORT_DEVICES and item.code in (POSITIVE, UNCERTAIN):
                abnormal = True
            if item.observation != NO_FINDING and _PRIORITY[item.code] > _PRIORITY[codes[item.observation]]:
                codes[item.observation] = item.code
        codes[NO_FINDING] = NOT_MENTIONED if abnormal else POSITIVE
        # A tuple, so that a caller changing the list it was given cannot change the cached codes.
        return tuple(codes[o] for o in CHEXPERT_OBSERVATIONS)

    def _label_clause(self, clause):
        cues = []
        for match in self._cues.finditer(clause):
            code, direction, strong = self._cue_types[match.group()]
            if code is not None:
                cues.append(_Cue(match.start(), match.end(), code, direction, match.group(), strong))
        masked = {observation: _mask(pattern, clause) for observation, pattern in self._unmentions.items()}
        evidence = []
        for observation, kind, phrase, pattern in self._patterns:
            for match in pattern.finditer(masked.get(observation, clause)):
                if kind == "normal":
                    code, cue = NEGATIVE, None
                else:
                    code, cue = self._classify(match.start(), match.end(), cues)
                    if kind == "hedged" and code == POSITIVE:
                        code = UNCERTAIN
                evidence.append((kind, Evidence(observation, code, phrase, match.group(), clause, cue)))
        # CheXpert tries negation before post-negation uncertainty, so a normal statement beats a hedged one.
        normal = {item.observation for kind, item in evidence if kind == "normal"}
        kept = [item for kind, item in evidence if not (kind == "hedged" and item.observation in normal)]
        for item in list(kept):
            if item.phrase in HEART_FAILURE_PHRASES and item.code in (POSITIVE, UNCERTAIN):
                kept.append(Evidence("Cardiomegaly", UNCERTAIN, item.phrase, item.matched, clause, item.cue))
        return kept

    @staticmethod
    def _classify(start, end, cues):
        """The code of a mention at [start, end): its nearest governing cue decides, POSITIVE without one."""
        governing = []
        for cue in cues:
            if cue.start >= start and cue.end <= end:
                governing.append(((0, False), cue))
            elif cue.end <= start and cue.direction in (_PRE, _BOTH):
                governing.append(((start - cue.end, False), cue))
            elif cue.start >= end and cue.direction in (_POST, _BOTH):
                governing.append(((cue.start - end, True), cue))
        if not governing:
            return POSITIVE, None
        nearest = min(governing, key=lambda pair: pair[0])[1]
        if nearest.code == UNCERTAIN and not nearest.strong:
            negation = [cue for _, cue in governing if cue.code == NEGATIVE]
            if negation:
                return NEGATIVE, negation[0].text
        return nearest.code, nearest.text


@lru_cache(maxsize=8)
def _default_labeler(options):
    return RuleBasedLabeler(**dict(options))


def _labeler(extra_phrases, options):
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"Unknown labeler option(s) {unknown}; expected some of {list(OPTIONS)}.")
    if extra_phrases:
        return RuleBasedLabeler(extra_phrases=extra_phrases, **options)
    return _default_labeler(tuple(sorted(options.items())))


def label_report(text: str, extra_phrases: dict[str, list[str]] | None = None, **options: bool) -> list[int]:
    """The 14 CheXpert codes (NOT_MENTIONED/POSITIVE/NEGATIVE/UNCERTAIN) for one raw or cleaned report.

    ``extra_phrases`` (observation -> list of mention phrases) extends the built-in ``MENTION_PHRASES``;
    ``options`` are the keyword options of ``RuleBasedLabeler`` (``OPTIONS``, all off by default).
    """
    return _labeler(extra_phrases, options).label(text)


def label_reports(
    texts, extra_phrases: dict[str, list[str]] | None = None, processes: int | None = None, **options: bool
) -> list[list[int]]:
    """``label_report`` for each report of ``texts``, each distinct text labeled once.

    ``processes`` worker processes label the distinct texts (default: one per ``MIN_REPORTS_PER_PROCESS`` distinct
    texts, up to the available cores; 1 labels in this process). The codes are the same either way.
    """
    texts = list(texts)
    labeler = _labeler(extra_phrases, options)
    distinct = list(dict.fromkeys(texts))
    workers = worker_count(len(distinct), MIN_REPORTS_PER_PROCESS, processes)
    if workers == 1:
        return [labeler.label(text) for text in texts]
    codes = dict(zip(distinct, map_chunks(_label_chunk, distinct, (extra_phrases, options), workers)))
    return [list(codes[text]) for text in texts]


def _label_chunk(texts, settings):
    """A worker's share of :func:`label_reports`."""
    extra_phrases, options = settings
    labeler = _labeler(extra_phrases, options)
    return [labeler.label(text) for text in texts]


def explain_report(text: str, extra_phrases: dict[str, list[str]] | None = None, **options: bool) -> list[Evidence]:
    """The evidence behind ``label_report(text)``: each matched phrase, its clause, the deciding cue and code."""
    return _labeler(extra_phrases, options).explain(text)
