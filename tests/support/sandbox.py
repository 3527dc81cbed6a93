"""The recorder's systemd unit re-created around a command, for tests, from the unit file itself.

systemd's exec_child gives a service's process a mount namespace (ProtectSystem=strict: every
mount read-only but /dev, /proc and /sys, then the unit's writable paths; PrivateTmp=), the
working directory, the umask, the environment, the capabilities and the system-call filter,
then execs it. `Sandbox.from_unit(...).command(argv)` does the same with the unit's own values:
`unshare --mount` runs this module's `mounts` stage as root, `setpriv` drops to the unit's
bounding set, the `filter` stage loads the unit's SystemCallFilter= into the kernel with
libseccomp (pyseccomp, ctypes over libseccomp2) and execs the command. The filter is expanded
from systemd's own group lists (`systemd-analyze syscall-filter`), so a call the unit does not
allow fails with the unit's SystemCallErrorNumber=, as under systemd.

Left out, and why: User= and ProtectHome= (the test's interpreter may live under /root, which
they would hide; the process stays uid 0 but with only the unit's capabilities), and systemd's
other seccomp filters (RestrictAddressFamilies=, RestrictNamespaces=, LockPersonality=),
which are not what the daemon's start path has tripped over.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

API_FILESYSTEMS = ("/dev", "/proc", "/sys")  # left writable by ProtectSystem=strict
PRIVATE_TMP = ("/tmp", "/var/tmp")  # each a new, empty tmpfs under PrivateTmp=
CHECKOUT = Path(__file__).resolve().parents[2]


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """The [Service] section's settings, each key's values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """systemd's system-call groups as this systemd defines them: '@group' -> its entries
    (calls and nested groups)."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    groups: dict[str, list[str]] = {}
    entries: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("@"):
            entries = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#") and entries is not None:
            entries.append(line.strip())
        elif not line.startswith("    "):
            entries = None
    return groups


def allowed_syscalls(values: Sequence[str]) -> list[str]:
    """The calls a SystemCallFilter= allow-list lets through, groups expanded recursively.
    systemd adds @default to every allow-list (load-fragment.c); deny-lists ('~') and
    per-call errnos ('name:EPERM') are not used by the unit and so not handled."""
    groups = syscall_groups()
    names = [name for value in values for name in value.split()]
    if not names or any(name.startswith("~") or ":" in name for name in names):
        raise ValueError(f"not an allow-list this helper handles: {' '.join(names)}")
    allowed: set[str] = set()
    pending = ["@default", *names]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.startswith("@"):
            if name not in groups:
                raise ValueError(f"systemd has no group {name}")
            pending.extend(groups[name])
        else:
            allowed.add(name)
    return sorted(allowed)


@dataclass(frozen=True)
class Sandbox:
    """What the process sees: `binds` maps a path the unit names to the test's folder put
    there (writable if listed in `writable`); the rest is the unit's own."""

    binds: dict[str, str]
    writable: list[str]
    private_tmp: bool
    workdir: str
    umask: int
    environment: dict[str, str]
    capabilities: list[str] | None  # None: the bounding set is left as it is
    syscalls: list[str]
    errno_number: int
    scratch: str  # an empty folder of the test's for the overlays that make mount points
    # The test's own checkout and interpreter where PrivateTmp= would hide them (a clone in
    # /tmp): kept visible, read-only, at their paths. The installed unit runs /opt/bodycam's.
    host_paths: list[str]

    @classmethod
    def from_unit(cls, unit: Path, binds: Mapping[str, Path], scratch: Path,
                  extra_environment: Mapping[str, str]) -> Sandbox:
        """The sandbox `unit` describes, with the test's folders at the unit's paths."""
        settings = unit_settings(unit)

        def last(key: str, default: str) -> str:
            return settings.get(key, [default])[-1]

        writable = [path for value in settings.get("ReadWritePaths", [])
                    for path in value.split()]
        writable += [f"/run/{name}" for value in settings.get("RuntimeDirectory", [])
                     for name in value.split()]
        if last("ProtectSystem", "no") != "strict":
            raise ValueError("this helper re-creates ProtectSystem=strict only")
        environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        for value in settings.get("Environment", []):
            environment.update(item.split("=", 1) for item in value.split())
        environment.update(extra_environment)
        bounding = settings.get("CapabilityBoundingSet")
        capabilities = (None if bounding is None else
                        [name.removeprefix("CAP_").lower() for name in bounding[-1].split()])
        return cls(
            binds={target: str(source) for target, source in binds.items()},
            writable=writable,
            private_tmp=last("PrivateTmp", "no") == "yes",
            workdir=last("WorkingDirectory", "/"),
            umask=int(last("UMask", "0022"), 8),
            environment=environment,
            capabilities=capabilities,
            syscalls=allowed_syscalls(settings.get("SystemCallFilter", [])),
            errno_number=getattr(errno, last("SystemCallErrorNumber", "EPERM")),
            scratch=str(scratch),
            host_paths=sorted({path for path in (str(CHECKOUT), sys.prefix, sys.base_prefix)
                               if _under(path, PRIVATE_TMP)}),
        )

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this sandbox (as root: the mounts need it)."""
        return ["unshare", "--mount", "--propagation", "private", sys.executable, __file__,
                "mounts", json.dumps(asdict(self)), "--", *argv]


def _mount(*args: str) -> None:
    """mount(8) without its userspace table (-n): /run is read-only by then, as it should be."""
    subprocess.run(["mount", "-n", *args], check=True)


def _mount_points() -> list[str]:
    """Every mount point of this namespace, in mount order (mountinfo's fifth field)."""
    lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    return [line.split()[4].encode().decode("unicode_escape") for line in lines]


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == folder or path.startswith(folder.rstrip("/") + "/")
               for folder in folders)


def _set_up_mounts(sandbox: Sandbox) -> None:
    """ProtectSystem=strict with the unit's writable paths, and PrivateTmp=, in this (new)
    mount namespace. A path the host lacks gets its mount point from an overlay on its
    parent, so the host's file system is never written."""
    _mount("-t", "tmpfs", "tmpfs", sandbox.scratch)
    fresh_tmps = [f"{sandbox.scratch}/tmp{number}" for number in range(len(PRIVATE_TMP))]
    for fresh in fresh_tmps:  # made now: the scratch folder is read-only like the rest below
        os.mkdir(fresh)
    overlaid: set[str] = set()
    for number, (target, source) in enumerate(sandbox.binds.items()):
        parent = os.path.dirname(target)
        if not os.path.isdir(target) and parent not in overlaid:
            layers = Path(sandbox.scratch) / str(number)
            (layers / "upper").mkdir(parents=True)
            (layers / "work").mkdir()
            _mount("-t", "overlay", "overlay", "-o",
                   f"lowerdir={parent},upperdir={layers}/upper,workdir={layers}/work", parent)
            overlaid.add(parent)
        os.makedirs(target, exist_ok=True)
        _mount("--bind", source, target)
    keep = [*API_FILESYSTEMS, *sandbox.writable]
    for point in _mount_points():
        if not _under(point, keep) and os.path.exists(point):
            _mount("-o", "remount,bind,ro", point)
    if sandbox.private_tmp:
        pairs = list(zip(PRIVATE_TMP, fresh_tmps, strict=True))
        for tmp, fresh in pairs:
            # Made aside, the test's own paths bound into it, then moved over the real one.
            _mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", fresh)
            for path in sandbox.host_paths:
                if _under(path, [tmp]):
                    inside = fresh + path.removeprefix(tmp)
                    os.makedirs(inside, exist_ok=True)
                    _mount("--bind", path, inside)
                    _mount("-o", "remount,bind,ro", inside)
        # The one that holds the scratch folder last: the move hides what is left there.
        for tmp, fresh in sorted(pairs, key=lambda pair: _under(sandbox.scratch, [pair[0]])):
            _mount("--move", fresh, tmp)


def _load_filter(sandbox: Sandbox) -> None:
    """The allow-list into the kernel; every other call fails with the unit's errno."""
    import pyseccomp as seccomp

    syscall_filter = seccomp.SyscallFilter(seccomp.ERRNO(sandbox.errno_number))
    for name in sandbox.syscalls:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if number != -1:  # -1: unknown to libseccomp; systemd skips those too
            syscall_filter.add_rule(seccomp.ALLOW, number)
    syscall_filter.load()


def main(stage: str, spec: str, argv: list[str]) -> None:
    sandbox = Sandbox(**json.loads(spec))
    if stage == "mounts":
        _set_up_mounts(sandbox)
        os.chdir(sandbox.workdir)
        os.umask(sandbox.umask)
        next_stage = [sys.executable, __file__, "filter", spec, "--", *argv]
        if sandbox.capabilities is not None:
            caps = ",".join(["-all", *(f"+{name}" for name in sandbox.capabilities)])
            next_stage = ["setpriv", f"--bounding-set={caps}", "--inh-caps=-all",
                          *next_stage]
        os.execvpe(next_stage[0], next_stage, sandbox.environment)
    elif stage == "filter":
        _load_filter(sandbox)
        os.execv(argv[0], argv)
    raise SystemExit(f"unknown stage {stage}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[4:])
