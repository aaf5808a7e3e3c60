"""Fuzz the bootstrap token parser the cert endpoint runs on an unauthenticated peer's header.

Invariant: ``kedge.pki.tokens.parse_token`` either returns a token or raises
:class:`kedge.errors.AuthenticationError` with code ``token_malformed`` and a message
that never echoes the input (it may hold a secret) -- nothing else. It *returns only*
for the one canonical spelling of a token: ``format_token(parse_token(s)) == s``, so
whitespace, padding, upper-case hex, a non-canonical last base64 character or any
other variant is refused. A returned token's ``repr`` hides the secret, its stored
hash matches its own secret and no other (one flipped secret character, or the same
secret under another token id, does not match).

Input: the bytes are decoded as latin-1 (how the HTTP shell decodes header values)
and, when they are valid UTF-8, also as UTF-8 (so non-ASCII look-alikes of digits and
letters reach the parser as single characters).

Run: ``.venv/bin/python fuzz/targets/fuzz_api_bootstrap_token.py -max_total_time=60 /tmp/scratch fuzz/corpus/api_bootstrap_token``
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.errors import AuthenticationError
from kedge.pki import tokens

_MESSAGE = "bootstrap token is malformed"


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def _check(text: str) -> None:
    try:
        tok = tokens.parse_token(text)
    except AuthenticationError as exc:
        _require(exc.code == "token_malformed", f"undocumented code {exc.code}")
        _require(str(exc) == _MESSAGE, "error message is not the fixed one (may echo the input)")
        return
    _require(tokens.format_token(tok) == text, "accepted a non-canonical spelling of a token")
    _require(tok.secret not in repr(tok) and tok.secret not in str(tok), "repr leaks the secret")
    stored = tokens.hash_secret(tok.token_id, tok.secret)
    _require(tokens.is_secret_hash(stored), "hash has the wrong shape")
    _require(tokens.secret_matches(tok.token_id, tok.secret, stored), "own secret does not match its hash")
    flipped = ("B" if tok.secret[0] == "A" else "A") + tok.secret[1:]
    _require(not tokens.secret_matches(tok.token_id, flipped, stored), "another secret matches the hash")
    other_id = ("b" if tok.token_id[0] == "a" else "a") + tok.token_id[1:]
    _require(not tokens.secret_matches(other_id, tok.secret, stored), "the secret matches under another id")


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    _check(data.decode("latin-1"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _check(text)


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
