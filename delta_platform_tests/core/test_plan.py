"""Window planning: contiguous half-open windows, exact replay, resets and gaps."""

from delta_platform.core.operators import Operator
from delta_platform.core.plan import Mode, plan_window
from delta_platform.core.watermark import Kind, Watermark
from delta_platform.core.window import Bound, Window


def w(v: int) -> Watermark:
    return Watermark(Kind.INT, v)


def test_first_window_is_closed_at_startvalue() -> None:
    plan = plan_window(Operator.GTE, w(0), None)
    assert plan.mode is Mode.FIRST and plan.window.low == Bound(w(0), True) and plan.needs_fence


def test_next_window_starts_just_after_last_high() -> None:
    last = Window(Operator.GTE, Bound(w(0), True), Bound(w(10), True))
    plan = plan_window(Operator.GTE, w(10), None, last_committed=last)
    assert plan.mode is Mode.NEXT and plan.window.low == Bound(w(10), False)


def test_next_after_exclusive_high_is_inclusive() -> None:
    last = Window(Operator.GTE, Bound(w(0), True), Bound(w(10), False))
    plan = plan_window(Operator.GTE, w(10), None, last_committed=last)
    assert plan.window.low == Bound(w(10), True)


def test_manual_edit_of_startvalue_is_a_reset() -> None:
    last = Window(Operator.GTE, Bound(w(0), True), Bound(w(10), True))
    plan = plan_window(Operator.GTE, w(3), None, last_committed=last)
    assert plan.mode is Mode.RESET and plan.window.low == Bound(w(3), True) and plan.window.notes


def test_replay_reuses_the_recorded_window_and_does_not_move_watermark() -> None:
    rec = Window(Operator.GTE, Bound(w(0), True), Bound(w(10), True))
    plan = plan_window(Operator.GTE, w(50), None, recorded=rec)
    assert plan.mode is Mode.REPLAY and plan.window == rec and not plan.moves_watermark


def test_gap_partition_is_empty() -> None:
    last = Window(Operator.GTE, Bound(w(0), True), Bound(w(10), True))
    plan = plan_window(Operator.GTE, w(10), None, last_committed=last, older_than_last=True)
    assert plan.mode is Mode.GAP and plan.window.empty and not plan.moves_watermark


def test_static_operators_carry_their_operands() -> None:
    assert plan_window(Operator.STE, w(5), None).window.high == Bound(w(5), True)
    between = plan_window(Operator.BETWEEN, w(1), w(9)).window
    assert (between.low, between.high) == (Bound(w(1), True), Bound(w(9), True))
    assert plan_window(Operator.NULL, None, None).window.low is None
    assert plan_window(Operator.EQ, w(4), None).mode is Mode.STATIC


def test_with_high_detects_empty_windows() -> None:
    base = Window(Operator.GTE, Bound(w(10), False))
    assert base.with_high(Bound(w(10), True)).empty
    assert not base.with_high(Bound(w(11), True)).empty
    assert Window(Operator.GTE, Bound(w(10), True)).with_high(Bound(w(10), True)).empty is False
    assert base.with_high(None).empty


def test_window_json_round_trip() -> None:
    win = Window(Operator.GTE, Bound(w(1), False), Bound(w(9), True), notes=("x",))
    assert Window.from_json(win.to_json()) == win
