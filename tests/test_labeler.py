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
    # CheXpert hedges a borderline heart size, not "borderline cardiomegaly" (positive).
    ("Borderline cardiomegaly.", {"Cardiomegaly": P}),
    ("Borderline heart size.", {"Cardiomegaly": U}),
    ("Stable cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": U}),
    ("Normal and stable cardiomediastinal contours.", {"Enlarged Cardiomediastinum": N}),
    ("Stable cardiomegaly.", {"Cardiomegaly": P}),
    ("Heart size is at the upper limits of normal.", {"Cardiomegaly": N}),
    ("Mediastinal widening.", {"Enlarged Cardiomediastinum": P}),
    # CheXpert: the cardiomediastinal silhouette is an Enlarged Cardiomediastinum mention, not a Cardiomegaly one.
    (
        "The cardiomediastinal silhouette is within normal limits.",
        {"Enlarged Cardiomediastinum": N, "Cardiomegaly": M},
    ),
    ("No focal airspace disease.", {"Lung Opacity": N}),
    ("No focal airspace consolidation.", {"Consolidation": N, "Lung Opacity": M}),
    ("The lungs are clear.", {"Lung Opacity": M, "Consolidation": M, "No Finding": P}),
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
    # CheXpert's post-negation uncertainty patterns match vascular congestion on its own.
    ("Mild pulmonary vascular congestion.", {"Edema": U}),
    ("No vascular congestion.", {"Edema": N}),
    ("Congestive heart failure.", {"Edema": P, "Cardiomegaly": U}),
    ("No evidence of CHF.", {"Edema": N, "Cardiomegaly": M}),
    ("No pulmonary edema.", {"Edema": N}),
    ("Right lower lobe pneumonia.", {"Pneumonia": P}),
    # CheXpert: a granuloma (or calcified nodule) is no Lung Lesion, but it is a finding, so No Finding is ruled out.
    ("Calcified granuloma in the right upper lobe.", {"Lung Lesion": M, "No Finding": M}),
    ("Calcified nodule in the left lung.", {"Lung Lesion": M, "No Finding": M}),
    ("Prior granulomatous disease.", {"Lung Lesion": M, "Pneumonia": M, "No Finding": M}),
    ("Right upper lobe nodule.", {"Lung Lesion": P}),
    ("A 2 cm mass in the left hilum.", {"Lung Lesion": P}),
    ("Nodular opacity in the right base.", {"Lung Lesion": P, "Lung Opacity": P}),
    ("Cavitary lesion in the left apex.", {"Lung Lesion": P}),
    ("Massive cardiomegaly.", {"Lung Lesion": M, "Cardiomegaly": P}),
    ("No nodules or masses.", {"Lung Lesion": N}),
    ("No suspicious pulmonary nodules.", {"Lung Lesion": N}),
    ("Healed left rib fracture.", {"Fracture": P}),
    ("Apical pleural thickening.", {"Pleural Other": P}),
    # CheXpert's No Finding phrases: other findings rule out No Finding unless negated.
    ("Degenerative changes of the spine.", {"Fracture": M, "No Finding": M}),
    ("The lungs are hyperinflated.", {"No Finding": M}),
    ("No emphysema.", {"No Finding": P}),
    ("Blunting of the left costophrenic angle.", {"Pleural Effusion": M, "No Finding": M}),
    ("Mild volume loss at the left base.", {"Atelectasis": M, "No Finding": M}),
    ("Biapical pleural parenchymal scarring.", {"Pleural Other": P, "Lung Opacity": P}),
    ("Apical pleural scarring.", {"Pleural Other": P, "Lung Opacity": M}),
    ("Peribronchial thickening.", {"Lung Opacity": P}),
    ("Left chest wall pacemaker.", {"Support Devices": P, "No Finding": P}),
    ("Median sternotomy wires.", {"Support Devices": M}),
    ("Platelike atelectasis at the left base.", {"Support Devices": M, "Atelectasis": P}),
    ("Old tuberculosis.", {"Support Devices": M}),
    ("Prosthetic aortic valve.", {"Support Devices": P}),
    ("Endotracheal tube tip 4 cm above the carina.", {"Support Devices": P}),
    ("Right PICC line in the SVC.", {"Support Devices": P}),
    ("Interval removal of the right PICC.", {"Support Devices": N}),
    ("Subsegmental atelectasis at the left base.", {"Atelectasis": P, "No Finding": M}),
    # CheXpert's patterns do not hedge "likely" or "unlikely" (see extended_hedges), only "less likely".
    ("Atelectasis is unlikely.", {"Atelectasis": P}),
    ("Likely atelectasis.", {"Atelectasis": P}),
    ("Pneumonia is less likely.", {"Pneumonia": U}),
    ("No new consolidation.", {"Consolidation": U}),
    ("Pleural effusion is not excluded.", {"Pleural Effusion": U}),
    ("Cannot rule out a small pneumothorax.", {"Pneumothorax": U}),
    ("Rule out pneumonia.", {"Pneumonia": N}),
    ("History of pneumonia.", {"Pneumonia": N}),
    ("Atelectasis or pneumonia.", {"Atelectasis": U, "Pneumonia": U}),
    ("Pneumothorax or effusion is not seen.", {"Pneumothorax": N, "Pleural Effusion": N}),
    ("Opacity secondary to atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
    ("Pneumothorax is not appreciated.", {"Pneumothorax": U}),
    ("The left base is obscured by effusion.", {"Pleural Effusion": U}),
    ("No definite pleural effusion.", {"Pleural Effusion": N}),
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


def test_empty_report_has_no_finding_as_in_chexpert():
    # CheXpert's aggregation starts from "no finding" and nothing in an empty report changes it.
    expected = [P] + [M] * (NUM_OBSERVATIONS - 1)
    assert label_report("") == expected
    assert label_report("  \n ") == expected


# (option, sentence, {observation: code by default}, {observation: code with the option on})
OPTION_CASES = [
    ("granuloma_as_lesion", "Calcified granuloma.", {"Lung Lesion": M}, {"Lung Lesion": P}),
    ("granuloma_as_lesion", "Stable calcified nodules.", {"Lung Lesion": M}, {"Lung Lesion": P}),
    ("granuloma_as_lesion", "No granulomas.", {"Lung Lesion": M}, {"Lung Lesion": N}),
    ("granuloma_as_lesion", "Granulomatous disease.", {"Lung Lesion": M}, {"Lung Lesion": M}),
    ("implied_negatives", "The lungs are clear.", {"Lung Opacity": M}, {"Lung Opacity": N}),
    (
        "implied_negatives",
        "The pleural spaces are clear.",
        {"Pleural Effusion": M, "Pneumothorax": M},
        {"Pleural Effusion": N, "Pneumothorax": N},
    ),
    ("implied_negatives", "Bony structures are intact.", {"Fracture": M}, {"Fracture": N}),
    ("implied_negatives", "Normal cardiomediastinal silhouette.", {"Cardiomegaly": M}, {"Cardiomegaly": N}),
    ("extended_hedges", "Likely atelectasis.", {"Atelectasis": P}, {"Atelectasis": U}),
    ("extended_hedges", "Pneumonia is unlikely.", {"Pneumonia": P}, {"Pneumonia": U}),
    ("extended_hedges", "Findings suggestive of edema.", {"Edema": P}, {"Edema": U}),
    ("extended_hedges", "Borderline cardiomegaly.", {"Cardiomegaly": P}, {"Cardiomegaly": U}),
]


@pytest.mark.parametrize(
    "option,sentence,default,switched", OPTION_CASES, ids=[f"{c[0]}-{c[1]}" for c in OPTION_CASES]
)
def test_options_are_off_by_default_and_switch_one_convention(option, sentence, default, switched):
    for options, expected in (({}, default), ({option: False}, default), ({option: True}, switched)):
        labels = label_report(sentence, **options)
        assert {o: _code(labels, o) for o in expected} == expected, explain_report(sentence, **options)
    assert label_reports([sentence], **{option: True}) == [RuleBasedLabeler(**{option: True}).label(sentence)]


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="granuloma_as_lesion"):
        label_report("Granuloma.", granuloma_lesion=True)


def test_options_combine_with_extra_phrases():
    labels = label_report(
        "Calcified granuloma. Bronchiectasis.", {"Lung Opacity": ["bronchiectasis"]}, granuloma_as_lesion=True
    )
    assert (_code(labels, "Lung Lesion"), _code(labels, "Lung Opacity")) == (P, P)


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


def test_label_reports_in_worker_processes_gives_the_same_codes():
    texts = ["Cardiomegaly.", "no pleural effusion .", "Possible pneumonia.", "Cardiomegaly.", ""] * 3
    expected = [RuleBasedLabeler(granuloma_as_lesion=True).label(text) for text in texts]
    assert label_reports(texts, processes=2, granuloma_as_lesion=True) == expected
    assert label_reports(texts, {"Edema": ["fluid overload"]}, processes=2) == label_reports(
        texts, {"Edema": ["fluid overload"]}, processes=1
    )


def test_cached_codes_are_a_fresh_list_each_time():
    labeler = RuleBasedLabeler()
    first = labeler.label("There is cardiomegaly.")
    first[0] = 99
    assert labeler.label("There is cardiomegaly.") == label_report("There is cardiomegaly.") != first


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
