"""What a part says on its console as its readiness changes: each change once, never every poll."""

from aisignals.pipeline import ReadinessReport


def test_down_a_new_reason_while_down_and_back_are_each_said_once():
    said: list[str] = []
    report = ReadinessReport(said.append)
    up = {"broker": True, "worker": True, "sink": True}
    broker_down = {"broker": False, "worker": True, "sink": True, "reason": "cannot reach the Kafka broker at x:1"}
    stalled = {"broker": True, "worker": False, "sink": True, "reason": "the sequencer took 0 records"}
    steps = [(True, up), (False, broker_down), (False, broker_down), (False, stalled), (False, stalled),
             (False, {"broker": True, "worker": False, "sink": True})]
    assert [report.update(ready, parts) for ready, parts in steps] == [False] * 6
    assert report.update(True, up) is True and report.update(True, up) is False
    assert said[:3] == ["not ready: cannot reach the Kafka broker at x:1", "still not ready: the sequencer took 0 records",
                        "still not ready: {'worker': False}"]
    assert len(said) == 4 and said[3].startswith("ready again after ")
    report.update(False, broker_down)  # down again: said again, as new
    assert said[4] == "not ready: cannot reach the Kafka broker at x:1"
