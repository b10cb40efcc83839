"""Key generation and loading for the analyzer, and the `20i-agg keygen` command."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ldp.envelope import fingerprint, open_sealed, public_key_to_text, seal
from server_agg.app import app
from server_agg.keys import KeyFileError, generate, load_private, load_public


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask, so a 0600 mode proves the code asked for it explicitly."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestGenerate:
    def test_writes_a_matching_pair(self, tmp_path: Path) -> None:
        """The files hold one key pair: what is sealed to one half opens with the other."""
        files = generate(tmp_path / "keys")
        public, private = load_public(tmp_path / "keys"), load_private(tmp_path / "keys")
        assert public_key_to_text(public) == files.public_text
        assert files.fingerprint == fingerprint(public)
        assert open_sealed(seal(b"hello", public), private) == b"hello"

    def test_private_key_mode_0600(self, tmp_path: Path, open_umask: None) -> None:
        """The private key is readable by its owner only, even under umask 0."""
        files = generate(tmp_path / "keys")
        assert _mode(files.private_path) == 0o600
        assert _mode(tmp_path / "keys") == 0o700

    def test_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """A second generate into the same directory fails and leaves the first pair intact."""
        generate(tmp_path)
        before = (tmp_path / "private.pem").read_bytes(), (tmp_path / "public.txt").read_bytes()
        with pytest.raises(KeyFileError, match="refusing to overwrite"):
            generate(tmp_path)
        after = (tmp_path / "private.pem").read_bytes(), (tmp_path / "public.txt").read_bytes()
        assert after == before

    def test_refuses_when_only_public_exists(self, tmp_path: Path) -> None:
        """Either file existing is enough to refuse."""
        (tmp_path / "public.txt").write_text("something\n")
        with pytest.raises(KeyFileError, match=r"public\.txt"):
            generate(tmp_path)
        assert not (tmp_path / "private.pem").exists()

    def test_force_replaces_with_mode_0600(self, tmp_path: Path, open_umask: None) -> None:
        """With force a new pair replaces the old one and the private key stays 0600."""
        first = generate(tmp_path)
        (tmp_path / "private.pem").chmod(0o644)
        second = generate(tmp_path, force=True)
        assert second.public_text != first.public_text
        assert _mode(second.private_path) == 0o600
        assert public_key_to_text(load_private(tmp_path).public_key()) == second.public_text


class TestLoad:
    def test_accepts_file_or_directory(self, tmp_path: Path) -> None:
        """Keys load from their files or from the key directory."""
        files = generate(tmp_path)
        assert load_public(files.public_path) == load_public(tmp_path)
        assert public_key_to_text(load_private(files.private_path).public_key()) == (
            files.public_text
        )

    def test_missing_directory_or_file(self, tmp_path: Path) -> None:
        """A missing path or a directory without the key is a KeyFileError naming it."""
        with pytest.raises(KeyFileError, match="no key file or key directory"):
            load_public(tmp_path / "absent")
        with pytest.raises(KeyFileError, match=r"has no public\.txt"):
            load_public(tmp_path)
        with pytest.raises(KeyFileError, match=r"has no private\.pem"):
            load_private(tmp_path)

    def test_junk_files(self, tmp_path: Path) -> None:
        """Files that are not keys are KeyFileErrors, not crashes."""
        (tmp_path / "public.txt").write_text("20i-pk1:not-a-key\n")
        (tmp_path / "private.pem").write_text("hello\n")
        with pytest.raises(KeyFileError, match="not a 20i public key"):
            load_public(tmp_path)
        with pytest.raises(KeyFileError, match="not a PEM private key"):
            load_private(tmp_path)


class TestKeygenCommand:
    def test_prints_public_key_and_fingerprint_only(self, tmp_path: Path) -> None:
        """keygen shows the public key and fingerprint and never the private key."""
        result = CliRunner().invoke(app, ["keygen", "--out", str(tmp_path / "k")])
        assert result.exit_code == 0, result.output
        text = (tmp_path / "k" / "public.txt").read_text().strip()
        assert text in result.stdout
        assert fingerprint(load_public(tmp_path / "k")) in result.stdout
        assert "PRIVATE KEY" not in result.output
        assert _mode(tmp_path / "k" / "private.pem") == 0o600

    def test_refuses_overwrite_in_one_line(self, tmp_path: Path) -> None:
        """A second keygen exits 1 with one line on stderr; --force succeeds."""
        runner = CliRunner()
        assert runner.invoke(app, ["keygen", "--out", str(tmp_path)]).exit_code == 0
        again = runner.invoke(app, ["keygen", "--out", str(tmp_path)])
        assert again.exit_code == 1
        assert again.stderr.count("\n") == 1 and "refusing to overwrite" in again.stderr
        assert "Traceback" not in again.output
        forced = runner.invoke(app, ["keygen", "--out", str(tmp_path), "--force"])
        assert forced.exit_code == 0, forced.output


class TestKeyHardening:
    def test_existing_directory_made_0700(self, tmp_path: Path, open_umask: None) -> None:
        """An existing 0777 key directory ends up 0700 after keygen."""
        out = tmp_path / "keys"
        out.mkdir(mode=0o777)
        os.chmod(out, 0o777)  # noqa: S103  # the permissive mode is the case under test
        generate(out)
        assert _mode(out) == 0o700

    def test_new_directory_made_0700(self, tmp_path: Path, open_umask: None) -> None:
        """A key directory keygen creates is 0700 even under umask 0."""
        generate(tmp_path / "new")
        assert _mode(tmp_path / "new") == 0o700

    @pytest.mark.parametrize("name", ["private.pem", "public.txt"])
    def test_force_never_follows_a_symlink(self, tmp_path: Path, name: str) -> None:
        """--force replaces a symlink planted at a key file name; its target stays unchanged."""
        out = tmp_path / "keys"
        generate(out)
        target = tmp_path / "victim.txt"
        target.write_bytes(b"precious\n")
        (out / name).unlink()
        (out / name).symlink_to(target)
        generate(out, force=True)
        assert target.read_bytes() == b"precious\n"
        assert not (out / name).is_symlink()
        assert _mode(out / "private.pem") == 0o600
        load_private(out)  # the new pair is complete and usable
        load_public(out)

    def test_without_force_a_symlink_is_refused(self, tmp_path: Path) -> None:
        """Without --force a dangling symlink at private.pem is refused, not written through."""
        out = tmp_path / "keys"
        out.mkdir()
        (out / "private.pem").symlink_to(tmp_path / "elsewhere.pem")
        with pytest.raises(KeyFileError, match="refusing to overwrite"):
            generate(out)
        assert not (tmp_path / "elsewhere.pem").exists()

    def test_no_temporary_files_left(self, tmp_path: Path) -> None:
        """After keygen the directory holds exactly the two key files."""
        generate(tmp_path / "k")
        generate(tmp_path / "k", force=True)
        assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["private.pem", "public.txt"]


class TestAggregateKeyWarning:
    def _aggregate(self, key: Path, tmp_path: Path) -> Result:
        from server_agg.store import Store

        Store(tmp_path / "s.db").close()
        return CliRunner().invoke(
            app, ["aggregate", "--key", str(key), "--store", str(tmp_path / "s.db")]
        )

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
    def test_warns_on_readable_private_key(self, tmp_path: Path, mode: int) -> None:
        """A private key readable by group or others draws one warning line naming the fix."""
        generate(tmp_path / "k")
        os.chmod(tmp_path / "k" / "private.pem", mode)
        result = self._aggregate(tmp_path / "k", tmp_path)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1 and f"{mode:04o}" in warnings[0] and "chmod 600" in warnings[0]

    def test_no_warning_on_0600(self, tmp_path: Path) -> None:
        """A 0600 private key draws no warning."""
        generate(tmp_path / "k")
        result = self._aggregate(tmp_path / "k", tmp_path)
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
