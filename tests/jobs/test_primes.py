"""The segmented prime sieve: exact counts, exact splitting, progress that adds up, and clean stopping."""

from __future__ import annotations

import os
import random
import tracemalloc
from itertools import accumulate, pairwise

import pytest

from jobs.kinds.primes.sieve import (
    DEFAULT_SEGMENT_SIZE,
    SieveStopped,
    count_primes_below,
    count_primes_in_range,
    split_range,
)

REFERENCE_LIMIT = 100_000
SMALL_PRIMES = [p for p in range(2, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def is_prime_by_trial_division(n: int) -> bool:
    if n < 4:
        return n >= 2
    if n % 2 == 0:
        return False
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


@pytest.fixture(scope="module")
def naive_pi() -> list[int]:
    """naive_pi[n] = number of primes < n for n <= REFERENCE_LIMIT, from a plain (unsegmented) sieve."""
    flags = [True] * REFERENCE_LIMIT
    flags[0] = flags[1] = False
    for p in range(2, int(REFERENCE_LIMIT**0.5) + 1):
        if flags[p]:
            for multiple in range(p * p, REFERENCE_LIMIT, p):
                flags[multiple] = False
    return [0, *accumulate(int(f) for f in flags)]


# --- known values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (10**1, 4),
        (10**2, 25),
        (10**3, 168),
        (10**4, 1229),
        (10**5, 9592),
        (10**6, 78498),
        (10**7, 664579),
        (10**8, 5761455),
    ],
)
def test_count_primes_below_powers_of_ten_matches_known_pi(n, expected):
    assert count_primes_below(n) == expected


@pytest.mark.skipif(os.environ.get("RUNBOARD_SLOW") != "1", reason="set RUNBOARD_SLOW=1 to run")
def test_pi_of_ten_to_the_nine_summed_over_two_halves_matches_known_value():
    assert sum(count_primes_in_range(lo, hi) for lo, hi in split_range(10**9, 2)) == 50_847_534


# --- edge cases ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "expected"), [(-5, 0), (0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 2), (6, 3)])
def test_count_primes_below_tiny_n(n, expected):
    assert count_primes_below(n) == expected


@pytest.mark.parametrize("x", [0, 1, 2, 3, 4, 17, 18, 19, 361, 1_000_003, 10**12])
def test_empty_range_counts_nothing_and_reports_no_progress(x):
    deltas = []
    assert count_primes_in_range(x, x, progress=deltas.append) == 0
    assert deltas == []


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 2, 0),
        (0, 3, 1),
        (1, 2, 0),
        (1, 3, 1),
        (1, 10, 4),
        (2, 3, 1),
        (2, 10, 4),
        (3, 10, 3),
        (2, 2, 0),
        (4, 5, 0),
        (0, 1, 0),
    ],
)
def test_ranges_starting_at_zero_one_and_two(lo, hi, expected):
    assert count_primes_in_range(lo, hi) == expected


@pytest.mark.parametrize("p", [*SMALL_PRIMES[:80], 1009, 1999])
def test_ranges_starting_and_ending_exactly_on_a_prime(p, naive_pi):
    assert count_primes_in_range(p, p + 1) == 1
    assert count_primes_in_range(p - 1, p) == int(is_prime_by_trial_division(p - 1))  # only true for p = 3
    for lo, hi in [(p, p + 50), (max(0, p - 50), p), (max(0, p - 50), p + 1), (p, 2 * p + 1)]:
        assert count_primes_in_range(lo, hi) == naive_pi[hi] - naive_pi[lo], (lo, hi)


@pytest.mark.parametrize("p", SMALL_PRIMES[:65])  # squares up to 313**2 < REFERENCE_LIMIT
def test_ranges_starting_and_ending_exactly_on_squares_of_primes(p, naive_pi):
    sq = p * p
    assert count_primes_in_range(sq, sq + 1) == 0
    for lo, hi in [(sq, sq + 100), (sq - 100, sq), (sq - 100, sq + 1), (sq, sq + 1), (sq - 1, sq + 2)]:
        lo = max(lo, 0)
        assert count_primes_in_range(lo, hi) == naive_pi[hi] - naive_pi[lo], (lo, hi)
        assert count_primes_in_range(lo, hi, segment_size=3) == naive_pi[hi] - naive_pi[lo], (lo, hi)


def test_squares_of_primes_beyond_the_reference_are_not_counted():
    for p in (1009, 7919, 104_729, 999_983):
        assert count_primes_in_range(p * p, p * p + 1) == 0
        assert count_primes_in_range(p * p - 1, p * p + 1) == count_primes_in_range(p * p - 1, p * p)


def test_every_small_range_matches_trial_division():
    primes = [n for n in range(300) if is_prime_by_trial_division(n)]
    for lo in range(0, 300, 7):
        for hi in range(lo, 300):
            expected = sum(1 for p in primes if lo <= p < hi)
            assert count_primes_in_range(lo, hi) == expected, (lo, hi)


# --- against a naive sieve -------------------------------------------------------------------------------


def test_random_ranges_match_a_naive_sieve(naive_pi):
    rng = random.Random(20240611)
    for _ in range(600):
        lo = rng.randrange(REFERENCE_LIMIT)
        hi = (
            rng.randrange(lo, REFERENCE_LIMIT + 1)
            if rng.random() < 0.5
            else min(lo + rng.randrange(80), REFERENCE_LIMIT)
        )
        segment_size = rng.choice([64, 65, 100, 1000, 4096, DEFAULT_SEGMENT_SIZE])
        assert count_primes_in_range(lo, hi, segment_size=segment_size) == naive_pi[hi] - naive_pi[lo], (
            lo,
            hi,
            segment_size,
        )


@pytest.mark.parametrize("segment_size", [1, 2, 3, 5, 8, 17, 19, 64, 100])
def test_tiny_segment_sizes_still_count_correctly(segment_size, naive_pi):
    rng = random.Random(segment_size)
    ranges = [(0, 5000), (1, 2), (2, 3), (17, 19), (289, 362), (9000, 9100)]
    ranges += [
        (lo, lo + rng.randrange(3000)) for lo in (rng.randrange(REFERENCE_LIMIT - 3000) for _ in range(10))
    ]
    for lo, hi in ranges:
        assert count_primes_in_range(lo, hi, segment_size=segment_size) == naive_pi[hi] - naive_pi[lo], (
            lo,
            hi,
        )


def test_count_primes_below_matches_a_naive_sieve(naive_pi):
    rng = random.Random(7)
    for n in [*range(0, 300), *(rng.randrange(REFERENCE_LIMIT + 1) for _ in range(200)), REFERENCE_LIMIT]:
        assert count_primes_below(n) == naive_pi[n], n


def test_ranges_far_from_zero_match_trial_division():
    # Base primes well beyond the small ones used elsewhere (up to ~10**5 for hi near 10**10).
    for lo in (10**9, 10**10 + 123):
        hi = lo + 600
        expected = sum(1 for n in range(lo | 1, hi, 2) if is_prime_by_trial_division(n))
        assert count_primes_in_range(lo, hi) == expected
        assert count_primes_in_range(lo, hi, segment_size=64) == expected


# --- split_range -----------------------------------------------------------------------------------------


def assert_exact_cover(ranges: list[tuple[int, int]], n: int) -> None:
    assert ranges[0][0] == 0
    assert ranges[-1][1] == n
    for lo, hi in ranges:
        assert lo < hi
    for (_, prev_hi), (next_lo, _) in pairwise(ranges):
        assert prev_hi == next_lo


def test_split_range_covers_zero_to_n_exactly_for_many_n_and_parts():
    rng = random.Random(99)
    ns = [*range(1, 500), *(rng.randrange(10**12) for _ in range(300)), 10**9, 10**10]
    for n in ns:
        for parts in (1, 2, 3, 4, 7, 16, 64):
            for align in (1, 2, 210, 30030):
                ranges = split_range(n, parts, align=align)
                assert 1 <= len(ranges) <= parts, (n, parts, align)
                assert_exact_cover(ranges, n)
                for lo, _ in ranges[1:]:
                    assert lo % align == 0, (n, parts, align)


def test_split_range_gives_parts_near_equal_ranges_when_n_is_large_enough():
    rng = random.Random(5)
    for _ in range(300):
        parts = rng.randrange(1, 20)
        align = rng.choice([1, 2, 210])
        n = rng.randrange(parts * align, 10**11)
        ranges = split_range(n, parts, align=align)
        assert len(ranges) == parts
        for lo, hi in ranges:
            assert abs((hi - lo) - n / parts) <= align, (n, parts, align, lo, hi)


def test_split_range_of_nothing_is_empty():
    assert split_range(0, 4) == []
    assert split_range(-10, 4) == []


def test_split_range_of_one_part_is_the_whole_range():
    assert split_range(10**9, 1) == [(0, 10**9)]
    assert split_range(1, 1) == [(0, 1)]


def test_split_range_gives_fewer_ranges_when_n_is_smaller_than_the_alignment():
    assert split_range(10, 4) == [(0, 10)]
    assert split_range(5, 8, align=1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


@pytest.mark.parametrize(("parts", "align"), [(0, 210), (-1, 210), (2, 0), (2, -210)])
def test_split_range_rejects_nonpositive_parts_or_alignment(parts, align):
    with pytest.raises(ValueError):
        split_range(100, parts, align=align)


def test_summing_counts_over_a_split_equals_the_single_count():
    rng = random.Random(3)
    for n in [0, 1, 2, 3, 210, 211, 10**6, *(rng.randrange(2 * 10**6) for _ in range(8))]:
        whole = count_primes_below(n)
        for parts in (1, 2, 3, 5, 8):
            for align in (1, 210):
                split_total = sum(
                    count_primes_in_range(lo, hi) for lo, hi in split_range(n, parts, align=align)
                )
                assert split_total == whole, (n, parts, align)


# --- progress and stopping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "segment_size"),
    [
        (0, 1, 64),
        (4, 5, 64),
        (5, 6, 64),
        (0, 2, 1),
        (0, 3, 1),
        (1, 2, 1),
        (0, 10**5, 1000),
        (12_345, 98_765, 777),
        (1, 10**6, DEFAULT_SEGMENT_SIZE),
        (0, 5 * DEFAULT_SEGMENT_SIZE + 3, DEFAULT_SEGMENT_SIZE),
        (7, 1000, 1),
        (8, 1001, 2),
    ],
)
def test_progress_deltas_are_positive_and_sum_to_the_range_length(lo, hi, segment_size):
    deltas = []
    count_primes_in_range(lo, hi, progress=deltas.append, segment_size=segment_size)
    assert all(d > 0 for d in deltas)
    assert sum(deltas) == hi - lo
    assert len(deltas) == -(-(hi - lo) // (2 * segment_size))  # one call per segment


def test_progress_does_not_change_the_count(naive_pi):
    deltas = []
    assert (
        count_primes_in_range(100, 90_000, progress=deltas.append, segment_size=500)
        == naive_pi[90_000] - naive_pi[100]
    )


def test_should_stop_raises_sieve_stopped_between_segments():
    checks, deltas = [], []

    def should_stop() -> bool:
        checks.append(None)
        return len(checks) > 3  # allow three segments, stop before the fourth

    with pytest.raises(SieveStopped) as stopped:
        count_primes_in_range(0, 10**6, progress=deltas.append, should_stop=should_stop, segment_size=1000)
    assert len(deltas) == 3
    assert stopped.value.covered == sum(deltas) == 6000
    assert stopped.value.partial_count == count_primes_below(6000)


def test_should_stop_true_from_the_start_stops_before_any_work():
    deltas = []
    with pytest.raises(SieveStopped) as stopped:
        count_primes_in_range(0, 10**8, progress=deltas.append, should_stop=lambda: True)
    assert deltas == []
    assert stopped.value.covered == 0
    assert stopped.value.partial_count == 0


def test_should_stop_that_never_fires_lets_the_count_finish():
    assert count_primes_in_range(0, 10**5, should_stop=lambda: False, segment_size=100) == 9592


# --- arguments and memory --------------------------------------------------------------------------------


@pytest.mark.parametrize(("lo", "hi", "segment_size"), [(-1, 10, 64), (10, 9, 64), (0, 10, 0), (0, 10, -1)])
def test_invalid_ranges_and_segment_sizes_are_rejected(lo, hi, segment_size):
    with pytest.raises(ValueError):
        count_primes_in_range(lo, hi, segment_size=segment_size)


def test_memory_stays_bounded_by_the_segment_size_for_a_huge_range():
    segments = []

    def stop_after_two() -> bool:
        return len(segments) >= 2

    count_primes_in_range(0, 1000)  # warm the per-process caches outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(SieveStopped):
            count_primes_in_range(0, 10**12, progress=segments.append, should_stop=stop_after_two)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Segment + zero buffer + wheel pattern + base primes up to 10**6: a few tens of MiB, not O(10**12).
    assert peak < 64 * 2**20
