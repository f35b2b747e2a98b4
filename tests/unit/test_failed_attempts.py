"""backend.limits.FailedAttempts: wrong credentials counted per address over a sliding window."""

from backend.limits import FailedAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_waits_until_its_oldest_counted_failure_leaves_the_window():
    clock = Clock()
    failures = FailedAttempts(limit=3, window=60, clock=clock)
    for _ in range(2):
        failures.failed("a")
        clock.now += 10
    assert failures.retry_after("a") == 0  # two of three
    failures.failed("a")
    assert failures.retry_after("a") == 40 and failures.retry_after("b") == 0
    clock.now += 40
    assert failures.retry_after("a") == 0  # the first failure left the window
    failures.failed("a")  # two still counted, this one the third: refused again
    assert failures.retry_after("a") == 10


def test_no_limit_and_a_bounded_memory():
    unlimited = FailedAttempts(limit=0, window=60)
    for _ in range(100):
        unlimited.failed("a")
    assert unlimited.retry_after("a") == 0
    clock = Clock()
    failures = FailedAttempts(limit=1, window=60, clock=clock)
    failures.MAX_ADDRESSES = 3
    for address in "abcd":
        failures.failed(address)
    assert [failures.retry_after(a) for a in "abcd"] == [0, 60, 60, 60]  # the quietest is forgotten
