import pytest

from cxrgen.labeler import RuleBasedLabeler, explain_report, label_report, label_reports, split_sentences
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NEGATIVE, NOT_MENTIONED, NUM_OBSERVATIONS, POSITIVE, UNCERTAIN

P, N, U, M = POSITIVE, NEGATIVE, UNCERTAIN, NOT_MENTIONED

# (sentence, {observation: expected code}); observations not listed are not checked.
CASES = [
    ("No pleural effusion.", {"Pleural Effusion": N}),
    ("Small left pleural effusion.", {"Pleural Effusion": P}),
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": N, "Pneumothorax": N}),
    ("There is no pneumothorax or large pleural effusion.", {"Pneumothorax": N, "Pleural Effusion": N}),
    (
        "No focal consolidation, pneumothorax, or pleural effusion.",
        {"Consolidation": N, "Pneumothorax": N, "Pleural Effusion": N},
    ),
    ("Pneumothorax is not seen.", {"Pneumothorax": N}),
    ("Heart size is normal.", {"Cardiomegaly": N}),
    ("Normal heart size.", {"Cardiomegaly": N}),
    ("The heart is normal in size.", {"Cardiomegaly": N}),
    ("The heart is not enlarged.", {"Cardiomegaly": N}),
    ("Cardiomegaly.", {"Cardiomegaly": P, "No Finding": M}),
    ("Mild cardiomegaly.", {"Cardiomegaly": P}),
    ("Enlarged cardiac silhouette.", {"Cardiomegaly": P}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": U}),
    ("Mediastinal widening.", {"Enlarged Cardiomediastinum": P}),
    (
        "The cardiomediastinal silhouette is within normal limits.",
        {"Enlarged Cardiomediastinum": N, "Cardiomegaly": N},
    ),
    ("No focal airspace disease.", {"Lung Opacity": N}),
    ("No focal airspace consolidation.", {"Consolidation": N, "Lung Opacity": M}),
    ("The lungs are clear.", {"Lung Opacity": N, "Consolidation": M, "No Finding": P}),
    ("Right lower lobe opacity.", {"Lung Opacity": P}),
    ("Patchy infiltrate in the left base.", {"Lung Opacity": P}),
    ("No acute cardiopulmonary abnormality.", {"No Finding": P, "Lung Opacity": M, "Pleural Effusion": M}),
    ("There are no XXXX of a pleural effusion.", {"Pleural Effusion": N}),
    ("Opacity which may represent atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
    ("May represent atelectasis.", {"Atelectasis": U}),
    ("Cannot exclude pneumonia.", {"Pneumonia": U}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
    ("Possible small effusion.", {"Pleural Effusion": U}),
    ("Findings suspicious for pneumonia.", {"Pneumonia": U}),
    ("There is no focal air space opacity to suggest a pneumonia.", {"Lung Opacity": N, "Pneumonia": N}),
    (
        "No suspicious pulmonary opacity, pneumothorax or definite pleural effusion.",
        {"Lung Opacity": N, "Pneumothorax": N, "Pleural Effusion": N},
    ),
    ("No effusion but there is cardiomegaly.", {"Pleural Effusion": N, "Cardiomegaly": P}),
    ("No pneumothorax, however a small effusion is present.", {"Pneumothorax": N, "Pleural Effusion": P}),
    ("No change in the small right pleural effusion.", {"Pleural Effusion": P}),
    ("Small pericardial effusion.", {"Pleural Effusion": M}),
    ("Pulmonary edema.", {"Edema": P}),
    ("Mild pulmonary vascular congestion.", {"Edema": P}),
    ("No pulmonary edema.", {"Edema": N}),
    ("Right lower lobe pneumonia.", {"Pneumonia": P}),
    ("Calcified granuloma in the right upper lobe.", {"Lung Lesion": P}),
    ("No nodules or masses.", {"Lung Lesion": N}),
    ("Healed left rib fracture.", {"Fracture": P}),
    ("Apical pleural thickening.", {"Pleural Other": P}),
    ("Degenerative changes of the spine.", {"Fracture": M, "No Finding": P}),
    ("Left chest wall pacemaker.", {"Support Devices": P, "No Finding": P}),
    ("Median sternotomy wires.", {"Support Devices": P}),
    ("Endotracheal tube tip 4 cm above the carina.", {"Support Devices": P}),
    ("Right PICC line in the SVC.", {"Support Devices": P}),
    ("Interval removal of the right PICC.", {"Support Devices": N}),
    ("Subsegmental atelectasis at the left base.", {"Atelectasis": P, "No Finding": M}),
    ("Atelectasis is unlikely.", {"Atelectasis": U}),
]


def _code(labels, observation):
    return labels[CHEXPERT_OBSERVATIONS.index(observation)]


@pytest.mark.parametrize("sentence,expected", CASES, ids=[case[0] for case in CASES])
def test_sentence_labels(sentence, expected):
    labels = label_report(sentence)
    assert len(labels) == NUM_OBSERVATIONS
    got = {observation: _code(labels, observation) for observation in expected}
    assert got == expected, explain_report(sentence)


def test_enough_cases():
    assert len(CASES) >= 30


# Raw text and what R2Gen's cleaner makes of it (lower case, commas and apostrophes gone, " . " separators).
RAW_AND_CLEANED = [
    ("No pleural effusion. Heart size is normal.", "no pleural effusion . heart size is normal ."),
    (
        "The heart is normal in size. No focal consolidation, pneumothorax, or pleural effusion. Stable calcified "
        "granuloma.",
        "the heart is normal in size . no focal consolidation pneumothorax or pleural effusion . "
        "stable calcified granuloma .",
    ),
    (
        "Mild cardiomegaly. Streaky opacities may represent atelectasis.\nNo pneumothorax.",
        "mild cardiomegaly . streaky opacities may represent atelectasis . no pneumothorax .",
    ),
    (
        "No effusion, but there is cardiomegaly. The patient's PICC is unchanged.",
        "no effusion but there is cardiomegaly . the patients picc is unchanged .",
    ),
]


@pytest.mark.parametrize("raw,cleaned", RAW_AND_CLEANED)
def test_raw_and_cleaned_text_agree(raw, cleaned):
    assert label_report(raw) == label_report(cleaned)


def test_sentences_split_on_periods_and_newlines_not_decimals():
    assert split_sentences("A 1.5 cm nodule. No effusion\nlungs clear .") == [
        ["a", "1", "5", "cm", "nodule"],
        ["no", "effusion"],
        ["lungs", "clear"],
    ]


def test_sentence_boundary_stops_negation():
    labels = label_report("No pleural effusion. Cardiomegaly.")
    assert _code(labels, "Pleural Effusion") == N
    assert _code(labels, "Cardiomegaly") == P


def test_aggregation_positive_beats_uncertain_beats_negative():
    assert _code(label_report("No effusion. Small effusion. Possible effusion."), "Pleural Effusion") == P
    assert _code(label_report("No effusion. Possible effusion."), "Pleural Effusion") == U
    assert _code(label_report("No effusion. No pleural effusion."), "Pleural Effusion") == N


def test_no_finding_rule():
    normal = label_report("Heart size is normal. The lungs are clear. No pleural effusion.")
    assert _code(normal, "No Finding") == P
    # Support devices do not count against No Finding; positive or uncertain findings do.
    assert _code(label_report("Pacemaker in place. Lungs are clear."), "No Finding") == P
    assert _code(label_report("Possible pneumonia."), "No Finding") == M
    assert _code(label_report("Small left effusion."), "No Finding") == M
    # Negative findings leave it positive.
    assert _code(label_report("No pneumonia."), "No Finding") == P


def test_empty_report_mentions_nothing():
    assert label_report("") == [M] * NUM_OBSERVATIONS
    assert label_report("  \n ") == [M] * NUM_OBSERVATIONS


def test_extra_phrases_extend_mentions():
    text = "Bilateral bronchiectasis. No pleural bronchiectasis."
    assert _code(label_report(text), "Lung Opacity") == M
    labels = label_report(text, extra_phrases={"Lung Opacity": ["bronchiectasis"]})
    assert _code(labels, "Lung Opacity") == P
    assert _code(label_report("No bronchiectasis.", {"Lung Opacity": ["bronchiectasis"]}), "Lung Opacity") == N
    # The built-in labeler is unaffected.
    assert _code(label_report(text), "Lung Opacity") == M


@pytest.mark.parametrize("extra", [{"Bronchiectasis": ["x"]}, {"No Finding": ["normal"]}, {"Edema": "edema"}])
def test_extra_phrases_are_validated(extra):
    with pytest.raises(ValueError, match="extra_phrases"):
        label_report("text", extra_phrases=extra)


def test_wildcard_phrase_must_sit_between_words():
    with pytest.raises(ValueError, match="between two words"):
        RuleBasedLabeler(extra_phrases={"Edema": ["* edema"]})


def test_label_reports_matches_label_report():
    texts = ["Cardiomegaly.", "no pleural effusion .", "Possible pneumonia."]
    assert label_reports(texts) == [label_report(text) for text in texts]


def test_explain_names_phrase_clause_and_cue():
    evidence = explain_report("No effusion but there is cardiomegaly.")
    by_observation = {item.observation: item for item in evidence}
    assert by_observation["Pleural Effusion"].code == N
    assert by_observation["Pleural Effusion"].cue == "no"
    assert by_observation["Pleural Effusion"].clause == "no effusion"
    assert by_observation["Cardiomegaly"].code == P
    assert by_observation["Cardiomegaly"].cue is None
    assert by_observation["Cardiomegaly"].phrase == "cardiomegaly"


def test_non_string_report_is_rejected():
    with pytest.raises(TypeError, match="str"):
        label_report(None)
