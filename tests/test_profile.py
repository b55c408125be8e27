"""Profile selection: MINIGEN_PROFILE wins; CI or pytest -> ci; CUDA -> gpu; else cpu."""
import pytest

from minigen import profile


@pytest.mark.parametrize("environ, cuda, expected", [
    ({"MINIGEN_PROFILE": "gpu", "CI": "true"}, False, "gpu"),
    ({"MINIGEN_PROFILE": " CPU "}, True, "cpu"),
    ({"CI": "true"}, True, "ci"),
    ({"PYTEST_CURRENT_TEST": "x"}, True, "ci"),
    ({"CI": "false"}, True, "gpu"),
    ({}, True, "gpu"),
    ({}, False, "cpu"),
])
def test_selection_order(environ, cuda, expected):
    assert profile.select(environ, cuda_available=cuda) == expected


def test_unknown_profile_is_named():
    with pytest.raises(ValueError, match="'fast' is not a profile"):
        profile.select({"MINIGEN_PROFILE": "fast"}, cuda_available=False)


def test_pick_follows_the_profile():
    assert [profile.PROFILES[n].pick(ci=1, cpu=2, gpu=3) for n in profile.NAMES] == [1, 2, 3]


def test_current_reads_environment(monkeypatch):
    monkeypatch.setenv("MINIGEN_PROFILE", "cpu")
    assert profile.current().name == "cpu"
    monkeypatch.setenv("MINIGEN_PROFILE", "ci")
    assert profile.current().name == "ci"
