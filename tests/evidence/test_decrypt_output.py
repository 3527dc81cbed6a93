"""`bodycam decrypt` only ever reads the sealed file, and writes nowhere a link points.

The sealed file may be the only copy of the evidence: whatever output is named (the
input itself, a hard link to it, a symbolic link, nothing at all for a file not named
`.age`), the input stays byte for byte as it was, and a refused or failed decrypt is one
line and exit 2, leaving any file already at the output name as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.cli import main
from agent.evidence.age import encrypt, identity_string

MEDIA = os.urandom(200_000)


@pytest.fixture
def agency(tmp_path: Path) -> tuple[Path, bytes]:
    """The agency's identity file and a file sealed to it (its bytes)."""
    key = X25519PrivateKey.generate()
    identity = tmp_path / "agency.key"
    identity.write_text(identity_string(key) + "\n")
    return identity, encrypt(MEDIA, [key.public_key()])


def _sealed(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def _decrypt(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["decrypt", *args])
    return code, capsys.readouterr().err


def test_a_file_not_named_age_decrypts_beside_itself_by_default(
        tmp_path: Path, agency: tuple[Path, bytes], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    identity, data = agency
    sealed = _sealed(tmp_path / "copy", "00000007.ts", data)
    monkeypatch.chdir(sealed.parent)
    code, err = _decrypt(capsys, sealed.name, "-i", str(identity))
    assert code == 0, err
    assert sealed.read_bytes() == data, "the input was written over"
    out = sealed.parent / "00000007.ts.decrypted"
    assert out.read_bytes() == MEDIA
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("how", ["same path", "another spelling", "hard link",
                                 "symbolic link to it"])
def test_the_output_is_never_the_input(tmp_path: Path, agency: tuple[Path, bytes],
                                       capsys: pytest.CaptureFixture[str], how: str) -> None:
    identity, data = agency
    sealed = _sealed(tmp_path / "sealed", "00000007.ts.age", data)
    out = {"same path": sealed,
           "another spelling": tmp_path / "sealed" / ".." / "sealed" / sealed.name,
           "hard link": tmp_path / "link.ts",
           "symbolic link to it": tmp_path / "symlink.ts"}[how]
    if how == "hard link":
        os.link(sealed, out)
    if how == "symbolic link to it":
        out.symlink_to(sealed)
    code, err = _decrypt(capsys, str(sealed), "-i", str(identity), "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(out) in err
    assert sealed.read_bytes() == data, "the input was written over"


def test_no_write_goes_through_a_symbolic_link_at_the_output(
        tmp_path: Path, agency: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    identity, data = agency
    sealed = _sealed(tmp_path / "sealed", "00000007.ts.age", data)
    victim = _sealed(tmp_path / "elsewhere", "notes.txt", b"someone else's file\n")
    out = tmp_path / "out.ts"
    out.symlink_to(victim)
    code, err = _decrypt(capsys, str(sealed), "-i", str(identity), "-o", str(out))
    assert code == 2 and "symbolic link" in err and err.count("\n") == 1, err
    assert victim.read_bytes() == b"someone else's file\n"
    assert out.is_symlink() and sealed.read_bytes() == data


def test_a_failed_decrypt_leaves_the_output_as_it_was(
        tmp_path: Path, agency: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    identity, data = agency
    other = tmp_path / "other.key"
    other.write_text(identity_string(X25519PrivateKey.generate()) + "\n")
    sealed = _sealed(tmp_path / "sealed", "00000007.ts.age", data)
    out = _sealed(tmp_path / "media", "00000007.ts", b"an earlier decrypt\n")
    code, err = _decrypt(capsys, str(sealed), "-i", str(other), "-o", str(out))
    assert code != 0 and "Traceback" not in err, err
    assert out.read_bytes() == b"an earlier decrypt\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["00000007.ts"], "a temporary left"

    code, err = _decrypt(capsys, str(sealed), "-i", str(identity), "-o", str(out))
    assert code == 0, err
    assert out.read_bytes() == MEDIA and sealed.read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["00000007.ts"]


def test_a_missing_input_is_one_line_and_exit_2(
        tmp_path: Path, agency: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    identity, _ = agency
    code, err = _decrypt(capsys, str(tmp_path / "nothing.age"), "-i", str(identity), "-o",
                         str(tmp_path / "out"))
    assert code == 2 and "nothing.age" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
