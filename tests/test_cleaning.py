import pytest

from cxrgen.processing.cleaning import clean_report


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "The heart is normal in size. The mediastinum is unremarkable. 1. No pneumothorax.",
            "the heart is normal in size . the mediastinum is unremarkable . no pneumothorax .",
        ),
        (
            "1. Heart size normal. 2. No focal consolidation, effusion, or pneumothorax. 3. Bones intact.",
            "heart size normal . no focal consolidation effusion or pneumothorax . bones intact .",
        ),
        ("Lungs are clear 2. No effusion.", "lungs are clear . no effusion ."),
        ("XXXX XXXX are intact. Normal XXXX.", "xxxx xxxx are intact . normal xxxx ."),
        (
            'Mild cardiomegaly (stable). Status post CABG; x-ray shows "no" change/progression of 1.5 cm nodule!',
            "mild cardiomegaly stable . status post cabg x-ray shows no changeprogression of 15 cm nodule .",
        ),
        ("Pressure <= 20 @ level: T11 [see {note}] 50% & more?", "pressure 20 level t11 see note 50 more ."),
    ],
)
def test_iu_examples(text, expected):
    assert clean_report(text) == expected
    assert clean_report(text, style="iu") == expected


def test_no_stray_empty_sentences():
    # R2Gen gives "heart size is normal . lungs are clear .  . no effusion ." for this text.
    assert clean_report("Heart size is normal.. Lungs are clear. . No effusion.") == (
        "heart size is normal . lungs are clear . no effusion ."
    )
    assert clean_report("Normal. (((!))). Clear.") == "normal . clear ."


@pytest.mark.parametrize("text", ["", "   ", "...", "(): !", "\n\n"])
@pytest.mark.parametrize("style", ["iu", "mimic"])
def test_no_words_gives_empty_string(text, style):
    assert clean_report(text, style=style) == ""


def test_mimic_newlines_blanks_and_spacing():
    text = (
        "FINDINGS:\n PA and lateral views of the chest.\n\nThe lungs are clear.  No pleural\neffusion.\r\n"
        "Dr. ___ was notified at 10:30 by ___.\n 2. Stable   heart size."
    )
    assert clean_report(text, style="mimic") == (
        "findings pa and lateral views of the chest . the lungs are clear . no pleural effusion . dr . "
        "was notified at 1030 by . stable heart size ."
    )


def test_iu_style_splits_sentences_on_period_space_only():
    # R2Gen's IU cleaner does not treat a newline as a sentence boundary; the MIMIC one does.
    assert clean_report("Heart normal.\nLungs clear.", style="iu") == "heart normal lungs clear ."
    assert clean_report("Heart normal.\nLungs clear.", style="mimic") == "heart normal . lungs clear ."


@pytest.mark.parametrize("style", ["iu", "mimic"])
@pytest.mark.parametrize(
    "text",
    [
        "The heart is normal in size. The mediastinum is unremarkable. 1. No pneumothorax.",
        "1. No acute disease. 2. XXXX opacity in the left base, x-ray 3. Stable (T11) fracture.",
        "FINDINGS:\n Lungs clear.\n\nDr. ___ notified at 10:30.",
    ],
)
def test_idempotent(text, style):
    cleaned = clean_report(text, style=style)
    assert cleaned
    assert clean_report(cleaned, style=style) == cleaned


def test_bad_arguments():
    with pytest.raises(ValueError, match="style 'chexpert'"):
        clean_report("Normal.", style="chexpert")
    with pytest.raises(TypeError, match="NoneType"):
        clean_report(None)
