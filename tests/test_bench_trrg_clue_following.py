"""The counting of benchmarks/bench_trrg_clue_following.py on hand-made clue and report labels."""

import importlib.util
from pathlib import Path

import numpy as np

from cxrgen.labels import CHEXPERT_OBSERVATIONS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_trrg_clue_following.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_trrg_clue_following", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_following_counts_written_clues_per_observation_and_per_clue_count():
    script = load_script()
    opacity, effusion = CHEXPERT_OBSERVATIONS.index("Lung Opacity"), CHEXPERT_OBSERVATIONS.index("Pleural Effusion")
    clues = np.zeros((10, 14), dtype=bool)
    clues[:6, opacity] = True  # six studies with an opacity clue, the first two also with an effusion clue
    clues[:2, effusion] = True
    written = np.zeros_like(clues)
    written[:3, opacity] = True  # three of the six opacity clues written, no effusion
    written[9, opacity] = True  # and one opacity without a clue
    truth = np.zeros_like(clues)
    truth[[0, 1, 2, 3, 9], opacity] = True

    result = script.following(clues, written, truth)

    figures = result["observations"]
    assert set(figures) == {"Lung Opacity"}  # Pleural Effusion has fewer than 5 positive clues
    assert figures["Lung Opacity"]["positive_clues"] == 6
    assert figures["Lung Opacity"]["written_when_clue_positive"] == 0.5
    assert figures["Lung Opacity"]["written_when_clue_negative"] == 0.25
    assert figures["Lung Opacity"]["clue_f1"] == 2 * 4 / (6 + 5)
    assert figures["Lung Opacity"]["report_f1"] == 2 * 4 / (4 + 5)
    assert result["by_positive_clues"] == {
        1: {"studies": 4, "share_written": 0.25},
        2: {"studies": 2, "share_written": 0.5},
    }
    assert "| Lung Opacity | 6 | 0.50 |" in script.markdown(
        {"num_beams": 1, "own_clues": result, "true_labels_as_clues": result}
    )
