"""`bodycam dock ...`: the docking station's commands (enroll, pull and custody, the
service and its status, officer, clock)."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_commands(commands: argparse._SubParsersAction) -> None:
    dock = commands.add_parser("dock", help="the docking station: pull, verify, take custody")
    actions = dock.add_subparsers(required=True, metavar="ACTION")
    link = argparse.ArgumentParser(add_help=False)
    link.add_argument("--device", required=True, metavar="URL",
                      help="the device's offload server, e.g. https://10.0.0.2:8443")
    link.add_argument("--cert", required=True, type=Path, help="the dock's certificate (PEM)")
    link.add_argument("--key", required=True, type=Path, help="the dock's private key (PEM)")
    link.add_argument("--ca", required=True, type=Path, help="the agency's device CA (PEM)")
    link.add_argument("--operator", required=True, help="who operates the dock (Art. 22)")
    link.add_argument("--device-id", help="the device must be this one (its certificate's CN); "
                      "default: whichever device the certificate names")
    link.add_argument("-v", "--verbose", action="store_true")

    enroll = actions.add_parser("enroll", parents=[link],
                                help="certify a device over the dock link and install its "
                                     "certificate, the dock CA and the agency's recipients")
    enroll.add_argument("--expect-key", required=True, metavar="FINGERPRINT",
                        help="the device's key fingerprint, as `bodycam keys show` prints it "
                             "on the device: the only trust in a device not yet enrolled")
    enroll.add_argument("--device-ca-key", required=True, type=Path,
                        help="the private key of the device CA (--ca), which signs the request")
    enroll.add_argument("--recipients", required=True, type=Path,
                        help="the agency's age recipients, one age1… per line")
    enroll.add_argument("--dock-ca", type=Path, help="the dock CA to install (PEM; default: "
                        "the device keeps the one that let this dock in)")
    enroll.add_argument("--replace", action="store_true",
                        help="enroll a device that is already enrolled (a renewal)")
    enroll.add_argument("--handover", type=Path,
                        help="handover certificates (PEM) for a dock or device CA the device "
                             "does not hold yet, each issued by one it holds")
    enroll.set_defaults(func=_enroll)

    pull_ = actions.add_parser("pull", parents=[link],
                               help="pull every sealed file not yet held, verify, report custody")
    pull_.add_argument("--out", required=True, type=Path, help="evidence folder (one per device "
                       "inside)")
    pull_.add_argument("--device-key", type=Path, help="the device's public key from the "
                       "enrolment register (default: the key the device serves)")
    pull_.add_argument("--connections", type=int, default=4, help="parallel downloads")
    pull_.add_argument("--max-mbit", type=_mbit, default=0, metavar="MBIT",
                       help="cap the sealed files' bytes per second over all the connections, "
                            "in Mbit/s (default 0: uncapped)")
    pull_.add_argument("--no-custody", action="store_true", help="pull and verify only")
    pull_.add_argument("--archive", metavar="s3://BUCKET/PREFIX",
                       help="write every file and the chain into this S3 bucket with Object "
                            "Lock, read back, before custody is reported (docs/archive.md); "
                            "credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws")
    pull_.add_argument("--archive-endpoint", metavar="URL",
                       help="the S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, "
                            "else AWS)")
    pull_.add_argument("--retention-days", type=_days, default=365, metavar="DAYS",
                       help="COMPLIANCE retention of each archived file of the standard class "
                            "(default 365, Art. 21)")
    pull_.add_argument("--marked-retention-days", type=_days, default=3650, metavar="DAYS",
                       help="COMPLIANCE retention of the files of a recording marked important "
                            "(default 3650; longer than --retention-days)")
    pull_.set_defaults(func=_pull)

    serve = actions.add_parser("serve", help="the dock as a service: poll the bays of "
                               "dock.toml, pull every device docked (docs/docking.md)")
    serve.add_argument("--config", required=True, type=Path, metavar="DOCK_TOML")
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(func=_serve)
    status = actions.add_parser("status", help="what the dock service last did, per bay and "
                                "per device")
    status.add_argument("--config", required=True, type=Path, metavar="DOCK_TOML")
    status.add_argument("--json", action="store_true", help="the state file, each bay with "
                        "the progress of its pull")
    status.add_argument("--device", metavar="ID", help="each sealed file of this device "
                        "and where it stands: pending, partial, held, verified, archived, "
                        "custody, purged (from its evidence folder)")
    status.add_argument("-v", "--verbose", action="store_true")
    status.set_defaults(func=_status)

    officer = actions.add_parser("officer", parents=[link],
                                 help="issue the device to an officer, or take it back")
    officer.add_argument("action", choices=["issue", "return"])
    officer.add_argument("--officer", help="the officer's id (issue)")
    officer.set_defaults(func=_officer)

    clock = actions.add_parser("clock", parents=[link],
                               help="set an unsynchronised device clock from the dock's")
    clock.set_defaults(func=_clock)


def _link(args: argparse.Namespace) -> Any:
    from agent.dock.pull import DockLink  # aiohttp loads only for the dock's commands

    return DockLink(args.cert, args.key, args.ca, args.device_id)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one dock operation; a failure is a one-line message and exit code, not a trace."""
    import aiohttp

    from agent.dock.pull import DockError

    try:
        return asyncio.run(coroutine)
    except DockError as exc:
        raise SystemExit(f"bodycam dock: {exc}") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        raise SystemExit(f"bodycam dock: the device's certificate is refused: "
                         f"{exc.certificate_error}") from exc
    except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
        raise SystemExit(f"bodycam dock: cannot talk to the device: {exc}") from exc


def _days(text: str) -> int:
    """A retention in whole days, 1 to 36500 (COMPLIANCE retention cannot be shortened)."""
    if not text.isdigit() or not 1 <= int(text) <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 36500")
    return int(text)


def _mbit(text: str) -> float:
    """A bandwidth cap in Mbit/s: 0 (none) or a positive number (as dock.toml's bay_mbit)."""
    from agent.dock.service_config import MAX_MBIT

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_MBIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of Mbit/s from 0 (uncapped) "
                                         f"to {MAX_MBIT:g}")
    return value


def _pull(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from agent.dock.archive import Archive, ArchiveError
    from agent.dock.pull import pull

    if args.marked_retention_days <= args.retention_days:
        print(f"bodycam dock: --marked-retention-days {args.marked_retention_days} must be "
              f"longer than --retention-days {args.retention_days}: marked footage is kept "
              "longer", file=sys.stderr)
        return 2
    try:
        archive = Archive.connect(args.archive, args.archive_endpoint) if args.archive else None
    except ArchiveError as exc:
        print(f"bodycam dock: --archive: {exc}", file=sys.stderr)
        return 2
    result = _run(pull(args.device, args.out, _link(args), args.operator, args.device_key,
                       args.connections, custody=not args.no_custody, archive=archive,
                       retention=timedelta(days=args.retention_days),
                       marked_retention=timedelta(days=args.marked_retention_days),
                       max_mbit=args.max_mbit))
    rate = result.bytes_fetched * 8 / 1e6 / max(result.seconds, 1e-9)
    print(f"{result.device}: {len(result.fetched)} sealed files fetched, "
          f"{result.bytes_fetched / 1e6:.1f} MB in {result.seconds:.2f} s ({rate:.0f} Mbit/s)\n"
          f"verify: {result.verify.summary()}")
    if result.archived is not None:
        archived = result.archived
        print(f"archive: {len(archived.files)} sealed files"
              f"{' and a chain slice' if archived.chain else ''} held under COMPLIANCE "
              f"retention in {archived.archive.location}, read back")
    if result.problem and result.custody_seq is None:
        print(f"REFUSED, nothing acknowledged: {result.problem}", file=sys.stderr)
        return 1
    if result.custody_seq is not None:
        print(f"custody: record {result.custody_seq} sealed on the device; receipt in "
              f"{result.folder / 'receipts'}; purged on the device: {len(result.purged)}")
    if result.problem:
        print(f"bodycam dock: {result.problem}", file=sys.stderr)
        return 1
    print(f"evidence: {result.folder} (bodycam verify {result.folder})")
    return 0


def _service_config(path: Path) -> Any:
    from agent.dock.service_config import ServiceConfigError, load_service_config

    try:
        return load_service_config(path)
    except ServiceConfigError as exc:
        print(f"bodycam dock: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from agent.dock.archive import ArchiveError
    from agent.dock.pull import DockError
    from agent.dock.serve import serve

    config = _service_config(args.config)
    if config is None:
        return 2
    try:
        serve(config)
    except (DockError, ArchiveError) as exc:
        print(f"bodycam dock: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from agent.dock.board import read_progress
    from agent.dock.pull import DockError
    from agent.dock.serve import State, status_lines, status_view

    config = _service_config(args.config)
    if config is None:
        return 2
    if args.device is not None:
        return _items(config.evidence, args.device, args.json)
    try:
        state = State.load(config.state)
    except DockError as exc:
        print(f"bodycam dock: {exc}", file=sys.stderr)
        return 2
    view = status_view(state, read_progress(config.state))
    if args.json:
        print(json.dumps(view, indent=1, sort_keys=True))
    else:
        print("\n".join(status_lines(view)))
    return 0


def _items(evidence: Path, device: str, as_json: bool) -> int:
    import json

    from agent.dock.items import ItemsError, device_items, item_lines

    try:
        view = device_items(evidence, device)
    except ItemsError as exc:
        print(f"bodycam dock: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(view, indent=1) if as_json else "\n".join(item_lines(view)))
    return 0


def verify_archive(url: str, key: Path | None) -> int:
    """`bodycam verify s3://bucket/prefix`: each device's archive downloaded and verified;
    the endpoint and credentials as for `dock pull --archive` (AWS_* variables, ~/.aws)."""
    from agent.dock.archive import Archive, ArchiveError
    from agent.dock.archive_check import verify_archive as check

    try:
        reports = check(Archive.connect(url), key)
    except ArchiveError as exc:
        print(f"bodycam verify: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        print("\n".join(report.lines()))
    return 0 if all(report.ok for report in reports) else 1


def _enroll(args: argparse.Namespace) -> int:
    from agent.dock.enroll import enroll, load_device_ca
    from agent.dock.pull import DockError

    try:
        recipients = args.recipients.read_text()
        dock_ca = args.dock_ca.read_bytes() if args.dock_ca else None
        handover = args.handover.read_bytes() if args.handover else None
        device_ca = load_device_ca(args.ca, args.device_ca_key)
    except (OSError, DockError) as exc:
        raise SystemExit(f"bodycam dock: {exc}") from exc
    done = _run(enroll(args.device, _link(args), device_ca, args.expect_key, recipients,
                       args.operator, dock_ca, args.replace, handover))
    certificate = done.certificate
    print(f"{done.device}: enrolled, sealed as record {done.seq}; certificate sha256 "
          f"{certificate['sha256']}, valid until {certificate['not_after']}; the device now "
          f"presents it, verified against {args.ca}")
    return 0


def _officer(args: argparse.Namespace) -> int:
    body = {"action": args.action, "operator": args.operator}
    if args.officer:
        body["officer"] = args.officer
    answer = _run(_post(args, "officer", body))
    print(f"officer {answer['officer'] or '(none: returned)'} sealed as record {answer['seq']}")
    return 0


def _clock(args: argparse.Namespace) -> int:
    answer = _run(_post(args, "clock", {"time_ns": time.time_ns(), "operator": args.operator}))
    print(f"device clock stepped by {answer['step_ns'] / 1e9:+.3f} s, sealed as record "
          f"{answer['seq']}")
    return 0


def _post(args: argparse.Namespace, path: str, body: dict[str, Any]
          ) -> Coroutine[Any, Any, dict[str, Any]]:
    from agent.dock.pull import post

    return post(args.device, _link(args), path, body)
