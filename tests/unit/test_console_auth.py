"""Pure parts of the console's sign-in: password hashes, token comparison and the sign-in throttle."""

from __future__ import annotations

from streams.console.auth import SignInThrottle, hash_password, same_token, verify_password


def test_password_hashes_are_salted_argon2_and_verify() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$") and first != second
    assert verify_password(first, "correct horse") and not verify_password(first, "correct horsE")
    assert not verify_password("not a hash", "correct horse")


def test_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc") and not same_token("abc", "abd") and not same_token("abc", None)


def test_throttle_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    now = [1000.0]
    throttle = SignInThrottle(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert not throttle.blocked("Kim")
        throttle.failed("kim")
    assert throttle.blocked("KIM") and not throttle.blocked("lee")
    now[0] += 61
    assert not throttle.blocked("kim")
    throttle.failed("kim")
    throttle.succeeded("kim")
    assert not throttle.blocked("kim")
