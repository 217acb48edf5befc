import numpy as np
import pytest
from PIL import Image

from cxrgen.evaluation.baselines import most_frequent_report, nearest_neighbour_reports


def _image(value, pattern=None):
    pixels = np.full((40, 40), value, dtype=np.uint8)
    if pattern is not None:
        pixels[pattern] = 255
    return Image.fromarray(pixels)


def test_most_frequent_report_counts_and_breaks_ties_by_first_occurrence():
    assert most_frequent_report(["b", "a", "a", "b", "c"]) == "b"
    assert most_frequent_report(["x", "y", "y"]) == "y"
    with pytest.raises(ValueError):
        most_frequent_report([])


def test_nearest_neighbour_retrieves_the_report_of_the_most_similar_study():
    left = (slice(None), slice(0, 20))
    top = (slice(0, 20), slice(None))
    train = [[_image(10, left), _image(10)], [_image(10, top), _image(10)]]
    query = [[_image(30, top), _image(12)], [_image(5, left), _image(40)]]
    assert nearest_neighbour_reports(train, ["left report", "top report"], query) == ["top report", "left report"]


def test_nearest_neighbour_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="training reports"):
        nearest_neighbour_reports([[_image(1)]], [], [[_image(1)]])
    with pytest.raises(ValueError, match="views"):
        nearest_neighbour_reports([[_image(1)]], ["r"], [[_image(1), _image(2)]])
