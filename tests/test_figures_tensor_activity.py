from monitor.figures.tensor_activity import ABOVE_TENSOR_ACTIVITY, MARGIN, check_mfu_against_tensor_activity


def test_missing_figures_give_no_verdict() -> None:
    assert check_mfu_against_tensor_activity(None, 0.5) is None
    assert check_mfu_against_tensor_activity(0.4, None) is None


def test_mfu_below_activity_is_consistent() -> None:
    got = check_mfu_against_tensor_activity(0.40, 0.62)
    assert got is not None and not got.suspect and got.reason == ""


def test_mfu_within_the_margin_is_consistent() -> None:
    got = check_mfu_against_tensor_activity(0.5 + MARGIN / 2, 0.5)
    assert got is not None and not got.suspect


def test_mfu_above_activity_is_flagged_with_its_reason() -> None:
    got = check_mfu_against_tensor_activity(0.75, 0.5)
    assert got is not None and got.suspect and got.reason == ABOVE_TENSOR_ACTIVITY
    assert "75.0%" in got.detail and "50.0%" in got.detail
