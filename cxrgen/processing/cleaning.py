"""Radiology report cleaning compatible with R2Gen's IU-Xray and MIMIC-CXR cleaners.

R2Gen (``modules/tokenizers.py``, reused unchanged by CMCRL) lower-cases a report, collapses ``..``, strips
enumerations ("1. ", " 2. ", ... up to 5), splits sentences on ``". "``, deletes the characters
``" / \\ '`` and ``. , ? ; * ! % ^ & _ + ( ) [ ] { }`` plus ``: ; < = > ? @`` (its regex contains the range
``:-\\[``), and joins the sentences with ``" . "`` followed by ``" ."``. Hyphens, digits and ``#$|~`` are kept,
so "x-ray" stays one word and the IU de-identification token "XXXX" becomes "xxxx". The MIMIC cleaner first
turns newlines into spaces and collapses runs of ``_`` and of spaces.

Intended differences from R2Gen (the word sequence is otherwise identical):

* Empty sentences are dropped. R2Gen's filter ``sent != []`` compares a string with a list and never removes
  anything, so "a. . b" or a sentence made only of deleted characters produced stray ". ." runs.
* Empty or blank input (or input made only of deleted characters) gives ``""`` instead of ``" ."``.
* Whitespace inside a sentence is collapsed to single spaces, so the output is exactly its words joined by
  one space. R2Gen left double spaces and newlines in the string; its tokenizer's ``split()`` read the same
  words from them.
* Runs of any number of dots collapse to one (R2Gen chained 3 replacements for IU, 8 for MIMIC, enough for
  8 and 256 dots).
* MIMIC style turns every whitespace character (also ``\\r`` and tabs) into a space and collapses runs of
  any length (R2Gen: ``\\n`` only, and runs of up to 64 spaces). Runs of ``_`` (the MIMIC "___"
  de-identification blanks) need no separate collapsing because every ``_`` is deleted anyway.
* The style is an explicit argument. CMCRL's ``MixTokenizer`` silently cleaned MIMIC reports with the IU
  cleaner during fine-tuning; callers here pass ``style="mimic"`` for MIMIC-CXR text.
* A non-string report raises ``TypeError`` and an unknown style raises ``ValueError``.

Cleaning is idempotent: cleaning a cleaned report returns it unchanged. This module uses the standard library
only because it travels to the Hub with the processor code.
"""

import re

STYLES = ("iu", "mimic")

# Same replacements, in the same order, as R2Gen: "1. " anywhere, then ". N. " and " N. " for N = 2..5.
_ENUMERATIONS = (
    (("1. ", ""),)
    + tuple((f". {number}. ", ". ") for number in range(2, 6))
    + tuple((f" {number}. ", ". ") for number in range(2, 6))
)
_WHITESPACE_RUNS = re.compile(r"\s+")
_DOT_RUNS = re.compile(r"\.{2,}")
# R2Gen's character class, with its ":-\[" range (":;<=>?@A-Z[") spelled out; A-Z is moot after lower().
_DELETED_CHARACTERS = re.compile(r"""[.,?;*!%^&_+()\[\]{}:<=>@"'/\\]""")


def clean_report(text: str, style: str = "iu") -> str:
    """Clean a report the R2Gen way: lower-cased words, sentences joined with " . ", ending with " .".

    Args:
        text: the raw report (findings) text.
        style: "iu" for IU-Xray reports, "mimic" for MIMIC-CXR reports (newlines and spacing normalised first).

    Returns:
        The cleaned report, or ``""`` when no word is left.
    """
    if style not in STYLES:
        raise ValueError(f"Unknown cleaning style {style!r}; expected one of {STYLES}.")
    if not isinstance(text, str):
        raise TypeError(f"A report must be a str, got {type(text).__name__}.")
    if style == "mimic":
        text = _WHITESPACE_RUNS.sub(" ", text)
    text = _DOT_RUNS.sub(".", text)
    for old, new in _ENUMERATIONS:
        text = text.replace(old, new)
    sentences = (" ".join(_DELETED_CHARACTERS.sub("", sentence).split()) for sentence in text.lower().split(". "))
    sentences = [sentence for sentence in sentences if sentence]
    return " . ".join(sentences) + " ." if sentences else ""
