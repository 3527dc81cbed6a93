"""`bodycam decrypt` on hostile age files and identities: a refusal in one line, never a
traceback or a hang; and age headers as large as the `age` CLI itself writes and opens.

The corpus is mutations of real files (ours and the `age` CLI's), generated from a fixed
seed: truncations, byte flips, and every header line replaced by what a careless or hostile
writer might put there (bad base64, wrong key lengths, a low-order share, oversized lines).
"""

from __future__ import annotations

import base64
import random
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bech32
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.evidence.age import (
    CHUNK,
    HEADER_LIMIT,
    encrypt,
    identity_string,
    parse_identity,
    recipient_string,
)
from tests.support.fuzz import run_cli

PLAINTEXT = bytes(range(256)) * (CHUNK // 256 + 40)  # two chunks: the last one short
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@pytest.fixture(scope="module")
def agency(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, X25519PrivateKey]:
    """The agency's identity file, written by age-keygen."""
    key = tmp_path_factory.mktemp("agency") / "agency.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    return key, parse_identity(key.read_text())


def _line_variants(line: bytes) -> Iterator[tuple[str, bytes]]:
    """What a header line might be replaced with."""
    yield "removed", b""
    yield "doubled", line + b"\n" + line
    yield "padded with =", line + b"="
    yield "a non-base64 byte", line + b"\xff"
    yield "a space at the end", line + b" "
    yield "CRLF", line + b"\r"
    yield "NUL inside", line[:5] + b"\x00" + line[5:]
    yield "cut in half", line[: len(line) // 2]
    yield "65 columns", line + b"A" * (65 - len(line) % 65)
    yield "last character changed", line[:-1] + _B64[(_B64.find(line[-1:]) + 1) % 64:][:1]
    yield "no argument", line.split(b" ")[0]
    yield "an empty argument", line.replace(b" ", b"  ", 1)


def _stanza_variants() -> Iterator[tuple[str, bytes]]:
    """X25519 stanzas of the wrong shape, each with a plausible body."""
    body = _b64(bytes(32))
    for size in (0, 16, 31, 33, 64):
        yield f"a {size}-byte share", b"-> X25519 " + _b64(bytes([9]) * size) + b"\n" + body
    yield "a low-order (all-zero) share", b"-> X25519 " + _b64(bytes(32)) + b"\n" + body
    for size in (0, 31, 33, 47, 48):
        yield f"a {size}-byte body", b"-> X25519 " + _b64(bytes([9]) * 32) + b"\n" + \
            _b64(bytes(size)) + (b"\n" if size == 48 else b"")
    yield "two arguments", b"-> X25519 " + _b64(bytes([9]) * 32) + b" extra\n" + body
    yield "a non-ASCII type", b"-> \xc3\xa9\n" + body
    yield "no body line", b"-> X25519 " + _b64(bytes([9]) * 32)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def corpus(good: bytes) -> Iterator[tuple[str, bytes]]:
    """A few hundred damaged copies of `good`, the same on every run."""
    rng = random.Random(18)
    header_end = good.index(b"\n---") + 1
    header_end = good.index(b"\n", header_end) + 1
    for cut in sorted({0, 1, 10, 21, 22, header_end - 1, header_end, header_end + 8,
                       header_end + 16, header_end + 100, len(good) - 17, len(good) - 1,
                       *rng.sample(range(len(good)), 24)}):
        yield f"cut at byte {cut}", good[:cut]
    for at in sorted(rng.sample(range(header_end), 60)) + rng.sample(range(len(good)), 20):
        flipped = bytearray(good)
        flipped[at] ^= 1 << rng.randrange(8)
        yield f"bit flipped at byte {at}", bytes(flipped)
    lines = good[:header_end].split(b"\n")[:-1]
    rest = good[header_end:]
    for index, line in enumerate(lines):
        for name, variant in _line_variants(line):
            if variant == line:
                continue
            changed = [*lines[:index], variant, *lines[index + 1:]]
            yield f"header line {index + 1} {name}", b"\n".join(changed) + b"\n" + rest
    for name, stanza in _stanza_variants():
        yield f"first stanza: {name}", b"\n".join([lines[0], stanza, *lines[1:]]) + b"\n" + rest
    mac = lines[-1]
    for name, footer in (("a 31-byte MAC", b"--- " + _b64(bytes(31))),
                         ("a 33-byte MAC", b"--- " + _b64(bytes(33))),
                         ("no MAC", b"---"), ("two MACs", mac + b" " + mac[4:])):
        yield f"footer: {name}", b"\n".join([*lines[:-1], footer]) + b"\n" + rest
    yield "no stanza", lines[0] + b"\n" + mac + b"\n" + rest
    yield "empty", b""
    yield "only the version line", lines[0] + b"\n"
    yield "another version", b"age-encryption.org/v2\n" + good[len(lines[0]) + 1:]
    yield "a header past the limit", lines[0] + b"\n" + \
        (b"-> X25519 " + _b64(bytes([9]) * 32) + b"\n" + _b64(bytes(32)) + b"\n") * \
        (HEADER_LIMIT // 100 + 10) + lines[-1] + b"\n" + rest
    yield "one endless line", lines[0] + b"\n-> " + b"A" * (HEADER_LIMIT + 10)
    yield "random bytes", rng.randbytes(5000)


def _wrong_identities(tmp: Path) -> Iterator[tuple[str, Path]]:
    """Identity files that are not one: each is the user's input to fix (exit 2)."""
    rng = random.Random(8)
    good = identity_string(X25519PrivateKey.generate())
    samples: dict[str, bytes] = {
        "binary": rng.randbytes(3000), "empty": b"", "only comments": b"# created: x\n",
        "a recipient instead": recipient_string(X25519PrivateKey.generate().public_key())
        .encode(), "cut short": good[:40].encode(), "one character changed":
        (good[:20] + ("Q" if good[20] != "Q" else "P") + good[21:]).encode(),
        "NUL inside": good[:10].encode() + b"\x00" + good[10:].encode(),
    }
    for size in (16, 31, 33, 64):
        words = bech32.convertbits(bytes([7]) * size, 8, 5)
        assert words is not None
        samples[f"a {size}-byte key"] = bech32.bech32_encode("age-secret-key-", words) \
            .upper().encode()
    for name, data in samples.items():
        path = tmp / f"identity-{len(name)}-{abs(hash(name)) % 10_000}"
        path.write_bytes(data)
        yield name, path
    yield "a folder", tmp
    yield "missing", tmp / "no-such-identity"


def _good_files(tmp: Path, key: Path, identity: X25519PrivateKey) -> dict[str, bytes]:
    """One file from our encryptor and one from the `age` CLI, to the same identity."""
    plain = tmp / "plain.bin"
    plain.write_bytes(PLAINTEXT)
    by_age = subprocess.run(["age", "-r", recipient_string(identity.public_key()), str(plain)],
                            check=True, capture_output=True).stdout
    return {"ours": encrypt(PLAINTEXT, [identity.public_key()]), "age": by_age}


def test_damaged_age_files_are_refused_in_one_line(
        agency: tuple[Path, X25519PrivateKey], tmp_path: Path) -> None:
    key, identity = agency
    failures, cases = [], 0
    for origin, good in _good_files(tmp_path, key, identity).items():
        assert run_cli(["decrypt", _write(tmp_path, good), "-i", str(key), "-o",
                        str(tmp_path / "out")]).code == 0
        for name, damaged in corpus(good):
            assert damaged != good, name
            cases += 1
            ended = run_cli(["decrypt", _write(tmp_path, damaged), "-i", str(key),
                             "-o", str(tmp_path / "out")])
            # 1: refused (changed, or not age); 3: a cut file decrypts up to its last chunk
            problem = ended.problem({1, 3})
            if problem is None and ended.code == 1 and not ended.stderr.startswith("bodycam: "):
                problem = f"no error line: {ended.stderr!r}"
            if problem:
                failures.append(f"{origin}, {name}: {problem}")
    assert cases >= 300
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures)


def test_wrong_identity_files_are_refused_in_one_line(
        agency: tuple[Path, X25519PrivateKey], tmp_path: Path) -> None:
    _, identity = agency
    sealed = _write(tmp_path, encrypt(PLAINTEXT, [identity.public_key()]))
    failures = []
    for name, path in _wrong_identities(tmp_path):
        ended = run_cli(["decrypt", sealed, "-i", str(path), "-o", str(tmp_path / "out")])
        problem = ended.problem({2})
        if problem is None and str(path) not in ended.stderr:
            problem = f"the identity file is not named: {ended.stderr!r}"
        if problem:
            failures.append(f"{name}: {problem}")
    assert not failures, "\n".join(failures)


def test_a_sealed_file_that_cannot_be_read_is_named(agency: tuple[Path, X25519PrivateKey],
                                                    tmp_path: Path) -> None:
    key, identity = agency
    latin1 = tmp_path / "latin1.key"  # age skips comments whatever their encoding: so do we
    latin1.write_bytes("# clé\n".encode("latin-1") + key.read_bytes())
    assert run_cli(["decrypt", _write(tmp_path, encrypt(b"x", [identity.public_key()])),
                    "-i", str(latin1), "-o", str(tmp_path / "o")]).code == 0
    for sealed in (tmp_path / "missing.age", tmp_path):
        ended = run_cli(["decrypt", str(sealed), "-i", str(key), "-o", str(tmp_path / "o")])
        assert ended.problem({2}) is None, ended
        assert str(sealed) in ended.stderr


def test_sixty_recipients_written_by_age_open_with_ours(
        agency: tuple[Path, X25519PrivateKey], tmp_path: Path) -> None:
    """age sets no limit on a header; 60 recipients make one of about 6 KiB, which the
    `age` CLI writes and opens, so we must too. Ours is the 31st recipient."""
    key, identity = agency
    others = [recipient_string(X25519PrivateKey.generate().public_key()) for _ in range(59)]
    recipients = [*others[:30], recipient_string(identity.public_key()), *others[30:]]
    plain = tmp_path / "plain.bin"
    plain.write_bytes(PLAINTEXT)
    sealed = tmp_path / "many.age"
    subprocess.run(["age", *(x for r in recipients for x in ("-r", r)), "-o", str(sealed),
                    str(plain)], check=True)
    assert sealed.read_bytes().index(b"\n---") > 4096
    out = tmp_path / "many.bin"
    ended = run_cli(["decrypt", str(sealed), "-i", str(key), "-o", str(out)])
    assert ended.code == 0, ended
    assert out.read_bytes() == PLAINTEXT
    # and our own writer: the `age` CLI opens what we write to 60 recipients
    ours = tmp_path / "ours.age"
    ours.write_bytes(encrypt(PLAINTEXT, [identity.public_key(), *(
        X25519PrivateKey.generate().public_key() for _ in range(59))]))
    assert subprocess.run(["age", "-d", "-i", str(key), str(ours)], check=True,
                          capture_output=True).stdout == PLAINTEXT


def test_a_hostile_header_past_the_limit_is_refused_as_too_long(
        agency: tuple[Path, X25519PrivateKey], tmp_path: Path) -> None:
    key, _ = agency
    endless = tmp_path / "endless.age"
    endless.write_bytes(b"age-encryption.org/v1\n" + (b"-> X25519 " + _b64(bytes([9]) * 32)
                        + b"\n" + _b64(bytes(32)) + b"\n") * (HEADER_LIMIT // 80))
    ended = run_cli(["decrypt", str(endless), "-i", str(key), "-o", str(tmp_path / "o")])
    assert ended.code == 1 and f"longer than {HEADER_LIMIT} bytes" in ended.stderr, ended


def test_decrypt_of_a_damaged_file_ends_in_one_line_as_a_process(
        agency: tuple[Path, X25519PrivateKey], tmp_path: Path) -> None:
    """A few through a real process: what an investigator's shell sees."""
    key, identity = agency
    chosen = {"header line 2 a non-base64 byte", "first stanza: a 31-byte share",
              "first stanza: a low-order (all-zero) share", "a header past the limit"}
    cases = [(n, d) for n, d in corpus(encrypt(PLAINTEXT, [identity.public_key()]))
             if n in chosen]
    assert len(cases) == len(chosen)
    for name, damaged in cases:
        result = _decrypt_process(_write(tmp_path, damaged), key, tmp_path / "out")
        assert result.returncode == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, \
            (name, result.stderr)


def test_an_identity_that_never_ends_is_refused(agency: tuple[Path, X25519PrivateKey],
                                                tmp_path: Path) -> None:
    """`-i /dev/zero` is read only as far as age's own limit on an identity file. In a
    process of bounded memory: read without a bound, it would take the machine's."""
    _, identity = agency
    sealed = _write(tmp_path, encrypt(b"x", [identity.public_key()]))
    result = _decrypt_process(sealed, Path("/dev/zero"), tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("bodycam: the identity /dev/zero is not an age identity")


def _decrypt_process(sealed: str, identity: Path, out: Path) -> subprocess.CompletedProcess[str]:
    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "agent", "decrypt", sealed, "-i",
                           str(identity), "-o", str(out)], capture_output=True, text=True,
                          timeout=60, preexec_fn=bounded)


def _write(tmp: Path, data: bytes) -> str:
    path = tmp / "sealed.age"
    path.write_bytes(data)
    return str(path)
