"""backend.limits.FailedAttempts: wrong credentials counted per address over a sliding window."""

import threading

from backend.limits import FailedAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_waits_until_its_oldest_counted_failure_leaves_the_window():
    clock = Clock()
    failures = FailedAttempts(limit=3, window=60, clock=clock)
    for number in range(2):
        assert failures.attempt("a", passed=False, credential=f"guess{number}") == 0
        clock.now += 10
    assert failures.attempt("a", passed=True) == 0  # two of three: right credentials still count
    assert failures.attempt("a", passed=False, credential="guess2") == 0  # the third
    assert failures.attempt("a", passed=True) == 40 and failures.attempt("b", passed=True) == 0
    clock.now += 39.5
    assert failures.attempt("a", passed=True) == 1  # never 0 while refused
    clock.now += 0.5
    assert failures.attempt("a", passed=False, credential="guess3") == 0  # the first one left the window
    assert failures.attempt("a", passed=True) == 10  # two still counted and this one: refused again


def test_the_same_wrong_credential_again_counts_once():
    """Label Studio retrying one project's stale password must not lock every project out."""
    clock = Clock()
    failures = FailedAttempts(limit=2, window=60, clock=clock)
    for _ in range(20):
        assert failures.attempt("a", passed=False, credential="Basic old-password") == 0
    assert failures.attempt("a", passed=True) == 0  # still one counted: the right one gets in
    assert failures.attempt("a", passed=False, credential="Basic guess") == 0  # a different one: two
    assert failures.attempt("a", passed=True) == 60
    assert all(b"old-password" not in fingerprint for _, fingerprint in failures._failures["a"])


def test_no_credentials_are_not_counted_nor_is_anything_without_a_limit():
    failures = FailedAttempts(limit=1, window=60)
    for _ in range(5):
        assert failures.attempt("a", passed=False, presented=False) == 0
    unlimited = FailedAttempts(limit=0, window=60)
    for _ in range(100):
        assert unlimited.attempt("a", passed=False) == 0


def test_parallel_guesses_cannot_slip_past_the_limit():
    failures = FailedAttempts(limit=3, window=60)
    counted, start = [], threading.Barrier(16)

    def guess(number: int) -> None:
        start.wait()
        counted.append(failures.attempt("a", passed=False, credential=f"guess{number}") == 0)

    threads = [threading.Thread(target=guess, args=(number,)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counted) == 3  # three guesses looked at, thirteen refused unseen


def test_memory_is_bounded_by_forgetting_the_quietest_address():
    clock = Clock()
    failures = FailedAttempts(limit=1, window=60, clock=clock)
    failures.MAX_ADDRESSES = 3
    for address in "abc":
        failures.attempt(address, passed=False)
    assert failures.attempt("a", passed=True) == 60  # refused, and so the address last heard from
    failures.attempt("d", passed=False)
    assert [failures.attempt(a, passed=True) for a in "abcd"] == [60, 0, 60, 60]  # b was the quietest
