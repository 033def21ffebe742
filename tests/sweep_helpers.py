"""What the sweep tests share: a stand-in for a kill, and a counter of the runner's training steps."""

from hamgrad.experiments import runner


class Interrupt(BaseException):
    """Stands in for a kill in the middle of a sweep (like KeyboardInterrupt, not an Exception a run could raise)."""


def count_steps(monkeypatch) -> dict:
    """Count the runner's training steps; ``counter["raise_at"] = n`` makes the n-th call raise ``Interrupt``."""
    counter = {"calls": 0, "raise_at": None}
    original = runner._train_step

    def step(*args):
        counter["calls"] += 1
        if counter["calls"] == counter["raise_at"]:
            raise Interrupt
        return original(*args)

    monkeypatch.setattr(runner, "_train_step", step)
    return counter
