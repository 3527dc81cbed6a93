"""A FUSE file system that loses, at a power cut, exactly what a real one may lose.

Run as its own process (`python -m tests.support.powercut_fs MEDIUM MOUNTPOINT`), so that a
cut is the death of that process: what it held in memory is gone, what it had put on the
*medium* (a folder of the host holding the durable state) is what the next mount finds.
`tests/support/powercut_disk.py` mounts, cuts and remounts it.

The model (strict POSIX, no background writeback):

- Every change is volatile: it is seen by every reader at once, and held in this process's
  memory only.
- `fsync` or `fdatasync` of a file makes its data and size durable; `fsync` also its mode and
  times. Neither makes the file's name durable: a new file whose folder was never fsync'd is
  gone after a cut, however often it was fsync'd itself. (ext4 with its journal usually commits
  a new file's entry with the file's fsync; POSIX does not promise it, so neither does this.)
- `fsync` of a folder makes its entries durable as they are: every create, mkdir, mknod,
  rename, link or unlink in it. A file it names that was never made durable comes back as an
  empty file with its mode (an inode without data, as ext4 leaves one written without fsync).
  A rename between two folders is durable in each at its own folder's fsync: after a cut
  between the two, the file may have both names or neither (if the destination was synced
  first or last). A folder made durable only in its parent comes back empty.
- A cut drops everything else: no page is ever written back by itself (a real kernel writes
  dirty data back after about 30 s; the cut here is the worst case). `SIGUSR1` makes
  everything durable at once, standing for that writeback ("the store is older than that").
- Un-synced data is dropped whole, never kept in part, except that an fsync that a cut
  interrupts may leave its data in part (the medium's write was under way).

Crashes on cue (`--crash`, repeatable, or armed later by SIGUSR2): `WHEN:OP:REGEX[@N]`, e.g.
`after:rename:^sealed/` or `before:fsync:^chain\\.jsonl$@3`. WHEN is `before` or `after` the
operation takes effect; OP is `rename` (matched against the new path), `fsync` (a file or a
folder, fdatasync included), `create`, `unlink` or `mkdir`; REGEX is searched in the path
relative to the mount; `@N` trips at the N-th match (default 1). Adding `&OP2:REGEX2` arms the
trigger only after an OP2 on a path matching REGEX2: `after:fsync:^open$&rename:\\.wav$` is the
first fsync of open/ after a voice note's rename into sealed/ (the rename durable in both
folders, its record not yet written). When a trigger trips, the process writes `tripped.json`
(the trigger, the path, the wall time) in `--state` and exits with status 3 at once: the power
is cut.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE
TRIPPED = 3  # the exit status of a process that cut itself on cue
BLOCK = 4096
CAPACITY = 64 << 30  # what statfs reports as the disk's size


@dataclass
class Inode:
    """One file, folder, socket or symlink: its volatile state, and whether the medium has it."""

    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[bytes, int] = field(default_factory=dict)  # folders only
    target: bytes = b""  # symlinks only
    rdev: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)
    ctime_ns: int = field(default_factory=time.time_ns)
    parent: int = ROOT  # where it was last named, for a trigger's path
    name: bytes = b""
    nlink: int = 0
    on_medium: bool = False
    dirty_from: int | None = 0  # smallest offset changed since the last sync, or None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def touched(self, offset: int) -> None:
        self.dirty_from = offset if self.dirty_from is None \
            else min(self.dirty_from, offset)
        self.mtime_ns = self.ctime_ns = time.time_ns()


@dataclass
class Trigger:
    """A crash on cue (see the module's docstring for the syntax)."""

    spec: str
    when: str
    op: str
    pattern: re.Pattern[str]
    nth: int
    armed_by: tuple[str, re.Pattern[str]] | None
    armed: bool = False

    @classmethod
    def parse(cls, spec: str) -> Trigger:
        main, _, arming = spec.partition("&")
        when, op, rest = main.split(":", 2)
        pattern, _, nth = rest.rpartition("@") if re.search(r"@\d+$", rest) else (rest, "", "1")
        if when not in ("before", "after") or op not in OPS:
            raise ValueError(f"--crash {spec!r}: WHEN is before or after, OP one of {OPS}")
        armed_by = None
        if arming:
            arm_op, arm_pattern = arming.split(":", 1)
            armed_by = (arm_op, re.compile(arm_pattern))
        return cls(spec, when, op, re.compile(pattern), int(nth), armed_by,
                   armed=armed_by is None)


OPS = ("rename", "fsync", "create", "unlink", "mkdir")


class Medium:
    """The durable state on the host: `m/<ino>.json` (kind, mode, times, a folder's entries)
    and `d/<ino>` (a file's data). Each metadata write is atomic (a rename on the host); the
    host does not lose power, so nothing here is fsync'd."""

    def __init__(self, root: Path) -> None:
        self.meta = root / "m"
        self.data = root / "d"
        self.meta.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)

    def write_meta(self, inode: Inode) -> None:
        record: dict[str, Any] = {"mode": inode.mode, "uid": inode.uid, "gid": inode.gid,
                                  "mtime_ns": inode.mtime_ns, "ctime_ns": inode.ctime_ns,
                                  "rdev": inode.rdev, "target": inode.target.hex()}
        if inode.is_dir:
            record["entries"] = {name.hex(): ino for name, ino in inode.entries.items()}
        tmp = self.meta / f"{inode.ino}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.meta / f"{inode.ino}.json")

    def write_data(self, inode: Inode) -> None:
        if inode.dirty_from is None:
            return
        fd = os.open(self.data / str(inode.ino), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, len(inode.data))
            start = inode.dirty_from
            if start < len(inode.data):
                os.pwrite(fd, inode.data[start:], start)
        finally:
            os.close(fd)
        inode.dirty_from = None

    def load(self) -> dict[int, Inode]:
        """Every inode reachable from the root; the rest (files never named durably) is
        deleted, as fsck frees an orphan inode."""
        inodes: dict[int, Inode] = {}
        pending = [(ROOT, ROOT, b"")]
        while pending:
            ino, parent, name = pending.pop()
            meta_path = self.meta / f"{ino}.json"
            if ino in inodes:
                inodes[ino].nlink += 1
                continue
            if not meta_path.exists():
                continue  # never made durable: the root of a fresh medium
            meta = json.loads(meta_path.read_text())
            data_path = self.data / str(ino)
            inode = Inode(ino, meta["mode"], bytearray(data_path.read_bytes())
                          if data_path.exists() else bytearray(),
                          {bytes.fromhex(k): v for k, v in meta.get("entries", {}).items()},
                          bytes.fromhex(meta["target"]), meta["rdev"], meta["uid"], meta["gid"],
                          meta["mtime_ns"], meta["ctime_ns"], parent, name, 1, True, None)
            inodes[ino] = inode
            pending += [(child, ino, child_name) for child_name, child in inode.entries.items()]
        for path in [*self.meta.iterdir(), *self.data.iterdir()]:
            if path.suffix == ".tmp" or int(path.name.split(".")[0]) not in inodes:
                path.unlink()
        return inodes


def read_durable(medium: Path, relative: str) -> bytes | None:
    """The durable bytes of a file at `relative` (a path below the mount), or None when a cut
    now would leave no such file: a test's view of what the device holds for sure."""
    ino = ROOT
    for part in Path(relative).parts:
        meta_path = medium / "m" / f"{ino}.json"
        if not meta_path.exists():
            return None
        found = json.loads(meta_path.read_text()).get("entries", {}).get(part.encode().hex())
        if found is None:
            return None
        ino = found
    data = medium / "d" / str(ino)
    if not (medium / "m" / f"{ino}.json").exists():
        return None
    return data.read_bytes() if data.exists() else b""


class PowerCutFS(pyfuse3.Operations):
    """The file system of the module's docstring."""

    def __init__(self, medium: Medium, triggers: list[Trigger], state: Path) -> None:
        super().__init__()
        self.medium = medium
        self.triggers = triggers
        self.state = state
        self.inodes = medium.load()
        if ROOT not in self.inodes:
            self.inodes[ROOT] = Inode(ROOT, stat.S_IFDIR | 0o755, nlink=2)
        self.next_ino = max(self.inodes) + 1
        self.handles: dict[int, int] = {}
        self.next_fh = 1

    # -- the model -------------------------------------------------------------------------

    def path(self, inode: Inode) -> str:
        parts = []
        while inode.ino != ROOT:
            parts.append(inode.name.decode(errors="replace"))
            inode = self.inodes[inode.parent]
        return "/".join(reversed(parts))

    def cue(self, when: str, op: str, path: str) -> None:
        """Cut the power here if a trigger says so."""
        for trigger in self.triggers:
            if when == "after" and trigger.armed_by and not trigger.armed \
                    and trigger.armed_by[0] == op and trigger.armed_by[1].search(path):
                trigger.armed = True
                continue
            if trigger.armed and trigger.when == when and trigger.op == op \
                    and trigger.pattern.search(path):
                trigger.nth -= 1
                if trigger.nth == 0:
                    trip = self.state / "tripped.tmp"  # renamed: a reader sees all or nothing
                    trip.write_text(json.dumps({"trigger": trigger.spec, "path": path,
                                                "wall": time.time()}))
                    os.replace(trip, self.state / "tripped.json")
                    os._exit(TRIPPED)

    def sync_file(self, inode: Inode, data_only: bool) -> None:
        self.medium.write_data(inode)
        if not data_only or not inode.on_medium:
            self.medium.write_meta(inode)
            inode.on_medium = True

    def sync_dir(self, folder: Inode) -> None:
        for ino in folder.entries.values():
            child = self.inodes[ino]
            if not child.on_medium:  # an inode without its data, or an empty folder
                saved = child.entries
                child.entries = {}
                self.medium.write_meta(child)
                child.entries = saved
                child.on_medium = True
        self.medium.write_meta(folder)
        folder.on_medium = True

    def sync_all(self) -> None:
        for inode in list(self.inodes.values()):
            if not inode.is_dir:
                self.sync_file(inode, data_only=False)
        for inode in list(self.inodes.values()):
            if inode.is_dir:
                self.sync_dir(inode)

    def attrs(self, inode: Inode) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode.ino
        entry.entry_timeout = entry.attr_timeout = 0
        entry.st_mode = inode.mode
        entry.st_nlink = max(inode.nlink, 1)
        entry.st_uid, entry.st_gid, entry.st_rdev = inode.uid, inode.gid, inode.rdev
        entry.st_size = len(inode.target) if stat.S_ISLNK(inode.mode) else len(inode.data)
        entry.st_blksize = BLOCK
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.st_atime_ns = entry.st_mtime_ns = inode.mtime_ns
        entry.st_ctime_ns = inode.ctime_ns
        return entry

    def folder(self, ino: int) -> Inode:
        inode = self.inodes[ino]
        if not inode.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    def child(self, parent: int, name: bytes) -> Inode:
        ino = self.folder(parent).entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.inodes[ino]

    def make(self, parent: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext,
             rdev: int = 0, target: bytes = b"") -> Inode:
        folder = self.folder(parent)
        if name in folder.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        inode = Inode(self.next_ino, mode, rdev=rdev, target=target, uid=ctx.uid, gid=ctx.gid,
                      parent=parent, name=name, nlink=2 if stat.S_ISDIR(mode) else 1)
        self.next_ino += 1
        self.inodes[inode.ino] = inode
        folder.entries[name] = inode.ino
        folder.mtime_ns = folder.ctime_ns = time.time_ns()
        return inode

    def unname(self, folder: Inode, name: bytes) -> None:
        inode = self.inodes[folder.entries.pop(name)]
        inode.nlink -= 2 if inode.is_dir else 1
        folder.mtime_ns = folder.ctime_ns = time.time_ns()

    # -- FUSE operations -------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self.attrs(self.folder(parent_inode))
        if name == b"..":
            return self.attrs(self.inodes[self.folder(parent_inode).parent])
        return self.attrs(self.child(parent_inode, name))

    async def forget(self, inode_list: Any) -> None:
        return None  # inodes live until the process ends; a cut or an unmount frees them

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self.inodes[inode])

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.inodes[inode]
        if fields.update_size:
            size = attr.st_size
            if size < len(node.data):
                del node.data[size:]
            else:
                node.data.extend(bytes(size - len(node.data)))
            node.touched(min(size, len(node.data)))
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = time.time_ns()
        return self.attrs(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.inodes[inode].target

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self.make(parent_inode, name, mode, ctx, rdev=rdev))

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        folder = self.folder(parent_inode)
        self.cue("before", "mkdir", self.path(folder) + "/" + name.decode())
        inode = self.make(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx)
        folder.nlink += 1
        self.cue("after", "mkdir", self.path(inode))
        return self.attrs(inode)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self.make(parent_inode, name, stat.S_IFLNK | 0o777, ctx,
                                    target=target))

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        folder = self.folder(parent_inode)
        inode = self.child(parent_inode, name)
        if inode.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self.cue("before", "unlink", self.path(inode))
        path = self.path(inode)
        self.unname(folder, name)
        self.cue("after", "unlink", path)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        folder = self.folder(parent_inode)
        inode = self.child(parent_inode, name)
        if not inode.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if inode.entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self.unname(folder, name)
        folder.nlink -= 1

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old, new = self.folder(parent_inode_old), self.folder(parent_inode_new)
        inode = self.child(parent_inode_old, name_old)
        new_path = (self.path(new) + "/" if new.ino != ROOT else "") + name_new.decode()
        self.cue("before", "rename", new_path)
        if name_new in new.entries:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            replaced = self.inodes[new.entries[name_new]]
            if replaced.is_dir and replaced.entries:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self.unname(new, name_new)
        del old.entries[name_old]
        new.entries[name_new] = inode.ino
        inode.parent, inode.name = new.ino, name_new
        if inode.is_dir:
            old.nlink -= 1
            new.nlink += 1
        now = time.time_ns()
        old.mtime_ns = old.ctime_ns = new.mtime_ns = new.ctime_ns = inode.ctime_ns = now
        self.cue("after", "rename", new_path)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        folder = self.folder(new_parent_inode)
        if new_name in folder.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        node = self.inodes[inode]
        folder.entries[new_name] = inode
        node.nlink += 1
        node.ctime_ns = time.time_ns()
        return self.attrs(node)

    def handle(self, inode: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = inode
        return fh

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.inodes[inode]
        if flags & os.O_TRUNC and node.data:
            node.data.clear()
            node.touched(0)
        return pyfuse3.FileInfo(fh=self.handle(inode))

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        folder = self.folder(parent_inode)
        path = (self.path(folder) + "/" if folder.ino != ROOT else "") + name.decode()
        self.cue("before", "create", path)
        inode = self.make(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), ctx)
        self.cue("after", "create", path)
        return pyfuse3.FileInfo(fh=self.handle(inode.ino)), self.attrs(inode)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(self.inodes[self.handles[fh]].data[off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.inodes[self.handles[fh]]
        if off > len(node.data):
            node.data.extend(bytes(off - len(node.data)))
        node.data[off:off + len(buf)] = buf
        node.touched(off)
        return len(buf)

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def fsync(self, fh: int, datasync: bool) -> None:
        node = self.inodes[self.handles[fh]]
        path = self.path(node)
        self.cue("before", "fsync", path)
        self.sync_file(node, data_only=datasync)
        self.cue("after", "fsync", path)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self.folder(inode)
        return self.handle(inode)

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        folder = self.folder(self.handles[fh])
        names = sorted(folder.entries)
        for index, name in enumerate(names[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self.attrs(self.inodes[folder.entries[name]]),
                                         index):
                break

    async def releasedir(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        folder = self.folder(self.handles[fh])
        path = self.path(folder)
        self.cue("before", "fsync", path)
        self.sync_dir(folder)
        self.cue("after", "fsync", path)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        used = sum((len(inode.data) + BLOCK - 1) // BLOCK for inode in self.inodes.values())
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK
        data.f_blocks = CAPACITY // BLOCK
        data.f_bfree = data.f_bavail = data.f_blocks - used
        data.f_files = 1 << 20
        data.f_ffree = data.f_favail = data.f_files - len(self.inodes)
        data.f_namemax = 255
        return data


async def serve(fs: PowerCutFS) -> None:
    """FUSE requests; SIGUSR1: everything durable now (the kernel's writeback); SIGUSR2: arm
    the triggers listed in `arm` in the state folder. Each is acknowledged by a line appended
    to `synced` or `armed` there."""
    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    fs.sync_all()
                    done = "synced"
                else:
                    fs.triggers += [Trigger.parse(spec) for spec in
                                    (fs.state / "arm").read_text().splitlines() if spec]
                    done = "armed"
                with (fs.state / done).open("a") as out:
                    out.write(f"{time.time()}\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("medium", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--crash", action="append", default=[], metavar="WHEN:OP:REGEX[@N]")
    parser.add_argument("--state", type=Path, required=True,
                        help="where it writes tripped.json when a trigger trips, and appends a "
                             "line to synced at each SIGUSR1 done")
    args = parser.parse_args(argv)
    try:
        triggers = [Trigger.parse(spec) for spec in args.crash]
    except (ValueError, re.error) as exc:
        print(f"powercut_fs: {exc}", file=sys.stderr)
        return 2
    fs = PowerCutFS(Medium(args.medium), triggers, args.state)
    options = set(pyfuse3.default_options)
    options.add("fsname=powercut")
    pyfuse3.init(fs, str(args.mountpoint), options)
    try:
        trio.run(serve, fs)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
