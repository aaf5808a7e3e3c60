from kedge._internal.ratelimit import KeyedLimiter, TokenBucket


def test_bucket_allows_burst_then_rate():
    b = TokenBucket(10.0, 5, now=0.0)
    assert sum(b.take(0.0) for _ in range(20)) == 5
    assert not b.take(0.05)
    assert b.take(0.1)  # one token refilled after 0.1 s at 10/s
    assert not b.take(0.1)


def test_wait_time_is_exact_and_bucket_never_exceeds_burst():
    b = TokenBucket(4.0, 2, now=0.0)
    b.take(0.0)
    b.take(0.0)
    assert b.wait_time(0.0) == 0.25
    assert b.wait_time(100.0) == 0.0
    assert sum(b.take(100.0) for _ in range(10)) == 2


def test_flooder_gets_at_most_burst_plus_rate_times_time():
    b = TokenBucket(100.0, 10, now=0.0)
    t, granted = 0.0, 0
    while t < 2.0:
        if b.take(t):
            granted += 1
        t += 0.0001
    assert granted <= 10 + 100 * 2 + 1


def test_keyed_limiter_is_per_key_and_bounded():
    lim = KeyedLimiter(1.0, 2, max_keys=3)
    assert lim.charge("a", 0.0) and lim.charge("a", 0.0)
    assert not lim.allowed("a", 0.0)
    assert lim.allowed("b", 0.0)
    for k in "bcdef":
        lim.charge(k, 0.0)
    assert len(lim._buckets) == 3  # oldest keys evicted, memory bounded
