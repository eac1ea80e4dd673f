import pytest

from mmllm.data import exact_match, normalize_answer


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Circle.", "circle"),
        ("Three", "3"),
        ("  an orange   star! ", "orange star"),
        ("a red star, a blue square and a green cross", "red star blue square and green cross"),
        ("Gray", "grey"),
        ("Centre", "center"),
        ("1234", "1234"),
        ("Yes.", "yes"),
    ],
)
def test_normalize(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_is_symmetric_normalisation():
    assert exact_match("Two.", "2")
    assert not exact_match("red", "dark red")
