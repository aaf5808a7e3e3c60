"""kedge.pki.tokens: token format, strict parsing, hashed secrets, durations."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools

import pytest

from kedge.errors import AuthenticationError, ConfigError, LocalError
from kedge.pki import tokens

CA_HASH = hashlib.sha256(b"some CA DER").hexdigest()


def _counting_bytes():
    counter = itertools.count()

    def randbytes(n: int) -> bytes:
        return bytes(next(counter) % 256 for _ in range(n))

    return randbytes


def test_generated_token_has_the_documented_shape() -> None:
    tok = tokens.generate(CA_HASH)
    text = tokens.format_token(tok)
    ca_hash, token_id, secret = text.split(".")
    assert ca_hash == CA_HASH
    assert len(token_id) == 6 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in token_id)
    assert len(secret) == 43 and len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert len(text) == tokens.TOKEN_LENGTH == 115
    assert tokens.parse_token(text) == tok


def test_generate_uses_the_injected_randomness() -> None:
    a = tokens.generate(CA_HASH, randbytes=_counting_bytes())
    b = tokens.generate(CA_HASH, randbytes=_counting_bytes())
    assert a == b
    assert base64.urlsafe_b64decode(a.secret + "=") == bytes(range(32))


def test_token_ids_are_unbiased_by_rejecting_high_bytes() -> None:
    # Bytes >= 252 would bias 'a'..'d'; they must be skipped, not reduced.
    stream = iter([bytes(range(32)), bytes([252, 253, 254, 255] + [0] * 12)])
    tok = tokens.generate(CA_HASH, randbytes=lambda n: next(stream))
    assert tok.token_id == "aaaaaa"


def test_a_broken_random_source_is_refused_not_looped_on() -> None:
    with pytest.raises(LocalError):
        tokens.generate(CA_HASH, randbytes=lambda n: b"\xff" * n)
    with pytest.raises(LocalError):
        tokens.generate(CA_HASH, randbytes=lambda n: b"\x00" * (n - 1))


@pytest.mark.parametrize("bad", ["", "A" * 64, CA_HASH.upper(), CA_HASH[:-1], "sha256:" + CA_HASH, None])
def test_generate_refuses_a_bad_ca_hash(bad) -> None:
    with pytest.raises(ConfigError):
        tokens.generate(bad)


def test_token_repr_never_shows_the_secret() -> None:
    tok = tokens.generate(CA_HASH)
    assert tok.secret not in repr(tok) and tok.secret not in str(tok)
    assert tok.token_id in repr(tok)


def _good() -> str:
    return tokens.format_token(tokens.generate(CA_HASH, randbytes=_counting_bytes()))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: "",
        lambda s: s + "\n",
        lambda s: " " + s,
        lambda s: s[:-1],
        lambda s: s + "A",
        lambda s: s.upper(),
        lambda s: s.replace(".", ":", 1),
        lambda s: s.replace(".", "..", 1)[:-1],
        lambda s: "sha256:" + s,
        lambda s: s[:64] + "." + "ABCDEF" + s[71:],  # upper-case token id
        lambda s: s[:72] + "+" + s[73:],  # standard (non-url) base64 alphabet
        lambda s: s[:72] + "=" + s[73:],
        lambda s: s[:-1] + "B",  # non-canonical: last char carries non-zero spare bits
        lambda s: s[:64] + "." + "\u0661" * 6 + s[71:],  # unicode digits
        lambda s: s.encode(),
        lambda s: None,
    ],
)
def test_parse_token_refuses_anything_but_the_exact_format(mutate) -> None:
    text = _good()
    assert tokens.parse_token(text)
    with pytest.raises(AuthenticationError) as err:
        tokens.parse_token(mutate(text))
    assert err.value.code == "token_malformed"
    assert text.split(".")[2] not in str(err.value)


def test_hash_secret_is_domain_separated_and_bound_to_the_token_id() -> None:
    tok = tokens.generate(CA_HASH)
    h = tokens.hash_secret(tok.token_id, tok.secret)
    assert h.startswith("sha256:") and len(h) == 71 and tokens.is_secret_hash(h)
    assert tok.secret not in h
    assert h != "sha256:" + hashlib.sha256(tok.secret.encode()).hexdigest()
    other_id = "zzzzzz" if tok.token_id != "zzzzzz" else "yyyyyy"
    assert tokens.hash_secret(other_id, tok.secret) != h
    assert tokens.hash_secret(tok.token_id, tok.secret) == h  # deterministic


def test_secret_matches_only_the_right_secret_for_the_right_id() -> None:
    a, b = tokens.generate(CA_HASH), tokens.generate(CA_HASH)
    stored = tokens.hash_secret(a.token_id, a.secret)
    assert tokens.secret_matches(a.token_id, a.secret, stored)
    assert not tokens.secret_matches(a.token_id, b.secret, stored)
    assert not tokens.secret_matches(b.token_id, a.secret, stored)
    assert not tokens.secret_matches(a.token_id, "x", stored)
    assert not tokens.secret_matches(a.token_id, a.secret, None)  # type: ignore[arg-type]
    assert not tokens.secret_matches(a.token_id, a.secret, "\udcff")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("15m", dt.timedelta(minutes=15)),
        ("90s", dt.timedelta(seconds=90)),
        ("1h", dt.timedelta(hours=1)),
        ("2h30m", dt.timedelta(hours=2, minutes=30)),
        ("30d", dt.timedelta(days=30)),
        ("1d12h5m3s", dt.timedelta(days=1, hours=12, minutes=5, seconds=3)),
        ("0h1s", dt.timedelta(seconds=1)),
    ],
)
def test_parse_duration_accepts(text, expected) -> None:
    assert tokens.parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "15", "m", "0s", "0d0h", "30m1h", "1h 30m", " 1h", "1h\n", "1.5h", "-5m", "+5m", "15M", "1w",
     "1h1h", "\u0661\u0665m", "99999999d", "36501d", "1" * 40 + "s", None, 15],
)
def test_parse_duration_refuses(text) -> None:
    with pytest.raises(ConfigError) as err:
        tokens.parse_duration(text)
    assert err.value.code == "bad_duration"
