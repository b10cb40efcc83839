"""Tests for ldp.envelope: HPKE seal/open, key text form, key files and fingerprints."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldp.envelope import (
    INFO,
    MIN_SEALED_LEN,
    PUBLIC_KEY_PREFIX,
    fingerprint,
    generate_keypair,
    load_private_key,
    open_sealed,
    public_key_from_text,
    public_key_to_text,
    seal,
    write_private_key,
)
from ldp.errors import EnvelopeError

# One key pair for the module: key generation is cheap, but fixed keys keep Hypothesis examples
# reproducible.
PRIVATE, PUBLIC = generate_keypair()
OTHER_PRIVATE, OTHER_PUBLIC = generate_keypair()
PLAINTEXT = (
    b'{"fields":{"os":0},"kind":"usage","period":"2026-W48","schema":"0123456789abcdef","v":1}'
)
SEALED = seal(PLAINTEXT, PUBLIC)


class TestSealOpen:
    def test_round_trip(self) -> None:
        """What is sealed to a public key opens with its private key."""
        assert open_sealed(seal(PLAINTEXT, PUBLIC), PRIVATE) == PLAINTEXT

    def test_empty_plaintext_round_trips(self) -> None:
        """An empty plaintext still seals and opens (the envelope does not care about content)."""
        assert open_sealed(seal(b"", PUBLIC), PRIVATE) == b""

    def test_each_seal_is_fresh(self) -> None:
        """Two seals of one plaintext differ (fresh ephemeral key), so they cannot be linked."""
        assert seal(PLAINTEXT, PUBLIC) != seal(PLAINTEXT, PUBLIC)

    def test_overhead_is_key_plus_tag(self) -> None:
        """A sealed report is the plaintext plus the 32-byte encapsulated key and 16-byte tag."""
        assert len(SEALED) == len(PLAINTEXT) + MIN_SEALED_LEN

    def test_plaintext_is_not_visible(self) -> None:
        """No recognisable piece of the plaintext appears in the ciphertext."""
        assert b"usage" not in SEALED
        assert b"2026-W48" not in SEALED

    def test_other_key_fails(self) -> None:
        """A report sealed to another key does not open."""
        with pytest.raises(EnvelopeError, match="authentication"):
            open_sealed(seal(PLAINTEXT, OTHER_PUBLIC), PRIVATE)

    def test_info_binds_the_context(self) -> None:
        """A ciphertext made with another HPKE info string does not open: the context is bound."""
        from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

        suite = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)
        foreign = suite.encrypt(PLAINTEXT, PUBLIC, info=b"other-app/v1")
        assert suite.decrypt(foreign, PRIVATE, info=b"other-app/v1") == PLAINTEXT
        assert INFO != b"other-app/v1"
        with pytest.raises(EnvelopeError):
            open_sealed(foreign, PRIVATE)

    def test_every_byte_flip_fails(self) -> None:
        """Flipping any single bit of any byte of a sealed report makes open fail."""
        for i in range(len(SEALED)):
            for bit in (0x01, 0x80):
                tampered = bytearray(SEALED)
                tampered[i] ^= bit
                with pytest.raises(EnvelopeError):
                    open_sealed(bytes(tampered), PRIVATE)

    def test_every_truncation_fails(self) -> None:
        """Every proper prefix of a sealed report, and every extension, fails to open."""
        for cut in range(len(SEALED)):
            with pytest.raises(EnvelopeError):
                open_sealed(SEALED[:cut], PRIVATE)
        with pytest.raises(EnvelopeError):
            open_sealed(SEALED + b"\x00", PRIVATE)

    def test_short_input_names_the_minimum(self) -> None:
        """Input shorter than key plus tag is refused with the lengths in the message."""
        with pytest.raises(EnvelopeError, match=r"too short \(3 bytes, at least 48\)"):
            open_sealed(b"abc", PRIVATE)

    def test_non_bytes_refused(self) -> None:
        """A str is not a sealed report."""
        with pytest.raises(EnvelopeError, match="must be bytes, not str"):
            open_sealed("x" * 100, PRIVATE)  # type: ignore[arg-type]

    def test_accepts_bytes_likes(self) -> None:
        """bytearray and memoryview of a sealed report open like bytes."""
        assert open_sealed(bytearray(SEALED), PRIVATE) == PLAINTEXT
        assert open_sealed(memoryview(SEALED), PRIVATE) == PLAINTEXT

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_random_bytes_only_raise_envelope_error(self, data: bytes) -> None:
        """Random bytes never open and never raise anything but EnvelopeError."""
        with pytest.raises(EnvelopeError):
            open_sealed(data, PRIVATE)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_fuzzed_mutations_only_raise_envelope_error(self, data: st.DataObject) -> None:
        """Random splices, cuts and byte rewrites of a ciphertext only raise EnvelopeError."""
        buf = bytearray(SEALED)
        for _ in range(data.draw(st.integers(1, 4), label="edits")):
            op = data.draw(st.sampled_from(["set", "cut", "insert"]), label="op")
            pos = data.draw(st.integers(0, len(buf)), label="pos")
            if op == "set" and pos < len(buf):
                buf[pos] ^= data.draw(st.integers(1, 255), label="xor")
            elif op == "cut":
                del buf[pos:]
            else:
                buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8), label="ins")
        if bytes(buf) == SEALED:  # every edit was a no-op (e.g. "set" past the end)
            assert open_sealed(bytes(buf), PRIVATE) == PLAINTEXT
        else:
            with pytest.raises(EnvelopeError):
                open_sealed(bytes(buf), PRIVATE)

    def test_low_order_point_is_refused(self) -> None:
        """An all-zero encapsulated key (a low-order point) is an EnvelopeError, not a crash."""
        with pytest.raises(EnvelopeError):
            open_sealed(bytes(32) + SEALED[32:], PRIVATE)


class TestPublicKeyText:
    def test_round_trip(self) -> None:
        """The text form parses back to the same key."""
        text = public_key_to_text(PUBLIC)
        assert public_key_to_text(public_key_from_text(text)) == text

    def test_shape(self) -> None:
        """The text form is the prefix plus 43 base64url characters, one line, no padding."""
        text = public_key_to_text(PUBLIC)
        assert re.fullmatch(re.escape(PUBLIC_KEY_PREFIX) + r"[A-Za-z0-9_-]{43}", text)

    def test_surrounding_whitespace_is_ignored(self) -> None:
        """A key pasted with a trailing newline still parses."""
        text = public_key_to_text(PUBLIC)
        assert public_key_to_text(public_key_from_text(f"  {text}\n")) == text

    def test_parsed_key_seals_to_the_owner(self) -> None:
        """A key parsed from its text seals reports that the private key opens."""
        key = public_key_from_text(public_key_to_text(PUBLIC))
        assert open_sealed(seal(PLAINTEXT, key), PRIVATE) == PLAINTEXT

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "must start with"),
            ("20i-pk2:" + "A" * 43, "must start with"),
            (PUBLIC_KEY_PREFIX + "A" * 42, "32 bytes"),
            (PUBLIC_KEY_PREFIX + base64.urlsafe_b64encode(bytes(33)).decode(), "32 bytes"),
            (PUBLIC_KEY_PREFIX + "é" * 43, "base64url"),
            (PUBLIC_KEY_PREFIX + "A", "base64url"),
        ],
    )
    def test_junk_is_refused(self, text: str, message: str) -> None:
        """Malformed key texts raise EnvelopeError naming the problem."""
        with pytest.raises(EnvelopeError, match=message):
            public_key_from_text(text)

    @settings(max_examples=300)
    @given(st.text(max_size=80))
    def test_fuzzed_text_only_raises_envelope_error(self, text: str) -> None:
        """Arbitrary text either parses to a key or raises EnvelopeError."""
        try:
            key = public_key_from_text(PUBLIC_KEY_PREFIX + text)
        except EnvelopeError:
            return
        assert isinstance(key, X25519PublicKey)


class TestFingerprint:
    def test_format(self) -> None:
        """Four groups of four lowercase hex digits."""
        assert re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){3}", fingerprint(PUBLIC))

    def test_stable_and_distinct(self) -> None:
        """The same key always has the same fingerprint; different keys differ."""
        again = public_key_from_text(public_key_to_text(PUBLIC))
        assert fingerprint(again) == fingerprint(PUBLIC)
        assert fingerprint(OTHER_PUBLIC) != fingerprint(PUBLIC)

    def test_known_value(self) -> None:
        """The fingerprint is SHA-256 of the raw key, truncated: checked against hashlib."""
        import hashlib

        raw = bytes(range(1, 33))
        key = X25519PublicKey.from_public_bytes(raw)
        digest = hashlib.sha256(raw).hexdigest()
        assert fingerprint(key).replace(" ", "") == digest[:16]


class TestPrivateKeyFile:
    def test_written_with_mode_0600(self, tmp_path: Path) -> None:
        """The private key file is readable and writable by its owner only."""
        path = tmp_path / "analyzer.pem"
        write_private_key(path, PRIVATE)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_round_trip(self, tmp_path: Path) -> None:
        """A written key loads back and opens what was sealed to its public half."""
        path = tmp_path / "analyzer.pem"
        write_private_key(path, PRIVATE)
        loaded = load_private_key(path)
        assert open_sealed(SEALED, loaded) == PLAINTEXT
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")

    def test_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """An existing key is never silently replaced unless force is given."""
        path = tmp_path / "analyzer.pem"
        write_private_key(path, PRIVATE)
        with pytest.raises(FileExistsError):
            write_private_key(path, OTHER_PRIVATE)
        assert open_sealed(SEALED, load_private_key(path)) == PLAINTEXT
        write_private_key(path, OTHER_PRIVATE, force=True)
        assert open_sealed(seal(PLAINTEXT, OTHER_PUBLIC), load_private_key(path)) == PLAINTEXT
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_force_tightens_loose_mode(self, tmp_path: Path) -> None:
        """Overwriting a world-readable file leaves it at 0600."""
        path = tmp_path / "analyzer.pem"
        path.write_bytes(b"")
        path.chmod(0o644)
        write_private_key(path, PRIVATE, force=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_force_never_follows_a_symlink(self, tmp_path: Path) -> None:
        """A link at the key's path is refused, even with force; its target is untouched."""
        target = tmp_path / "elsewhere.txt"
        target.write_bytes(b"not yours")
        target.chmod(0o644)
        link = tmp_path / "analyzer.pem"
        link.symlink_to(target)
        for force in (False, True):
            with pytest.raises(OSError):
                write_private_key(link, PRIVATE, force=force)
        assert target.read_bytes() == b"not yours"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing key file is an EnvelopeError naming the path."""
        path = tmp_path / "nope.pem"
        with pytest.raises(EnvelopeError, match=r"nope\.pem"):
            load_private_key(path)

    def test_not_pem(self, tmp_path: Path) -> None:
        """A file that is not PEM is an EnvelopeError."""
        path = tmp_path / "junk.pem"
        path.write_bytes(b"hello")
        with pytest.raises(EnvelopeError, match="not a PEM private key"):
            load_private_key(path)

    def test_wrong_key_type(self, tmp_path: Path) -> None:
        """A PEM key of another algorithm is refused with its type named."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        path = tmp_path / "ed.pem"
        path.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(EnvelopeError, match="not an X25519 key"):
            load_private_key(path)

    def test_generated_pairs_match(self) -> None:
        """generate_keypair returns a private key and its own public key."""
        private, public = generate_keypair()
        assert isinstance(private, X25519PrivateKey)
        assert public_key_to_text(private.public_key()) == public_key_to_text(public)


class TestPublicKeyTextStrictness:
    def test_characters_outside_the_alphabet_are_refused(self) -> None:
        """A key text with stray characters is refused rather than silently cleaned up."""
        text = public_key_to_text(PUBLIC)
        with pytest.raises(EnvelopeError):
            public_key_from_text(text[:8] + "!*" + text[8:])
