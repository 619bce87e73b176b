"""Pure parts of the console's sign-in: password hashes, token comparison and usernames (the throttle's pure parts
are in test_console_throttle.py)."""

from __future__ import annotations

import pytest

from streams.console.auth import hash_password, same_token, username_problem, verify_password


@pytest.mark.attack("brute_force")
def test_password_hashes_are_salted_argon2_and_verify() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$") and first != second
    assert verify_password(first, "correct horse") and not verify_password(first, "correct horsE")
    assert not verify_password("not a hash", "correct horse")


@pytest.mark.attack("sessions")
def test_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc") and not same_token("abc", "abd") and not same_token("abc", None)


@pytest.mark.attack("hostile_input")
def test_usernames_that_no_manager_can_have_are_named() -> None:
    assert username_problem("kim") is None and username_problem("kim@fleet-a") is None
    assert "NUL" in (username_problem("kim\x00") or "")
    assert username_problem("\ud800") and username_problem("a\nb") and username_problem("")
    assert username_problem("x" * 201)
