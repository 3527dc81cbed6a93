"""`bodycam`: the daemon, the demo, the verifier, and the local controls of a running daemon."""

from __future__ import annotations

import argparse
import faulthandler
import json
import re
import signal
import sys
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import logs
from agent.config import Config, ConfigError, load_config
from agent.device.control import request
from agent.dock.cli import add_commands as add_dock_commands
from agent.evidence.chain import ChainBusyError
from agent.evidence.keys import KeyMaterialError
from agent.evidence.store import Store
from agent.evidence.witness import WitnessError

if TYPE_CHECKING:
    from agent.evidence.verify import Outside


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, KeyMaterialError, ChainBusyError, WitnessError) as exc:
        print(logs.error_line(f"bodycam: {exc}"), file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(logs.error_line(f"bodycam: {exc}"), file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="store_true")
    common = argparse.ArgumentParser(add_help=False, parents=[verbosity])
    common.add_argument("--config", type=Path, help="TOML configuration (default: the "
                        "simulated device, config/sim.toml)")
    common.add_argument("--store", type=Path, help="store folder (overrides [store] path)")

    parser = argparse.ArgumentParser(prog="bodycam", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument("--mqtt", metavar="URL", help="publish telemetry to this broker, "
                        "mqtt://host:port or mqtts://host:port (turns [mqtt] on, overrides "
                        "its url)")

    run = commands.add_parser("run", parents=[common, broker], help="run the recorder daemon")
    run.set_defaults(func=_run)

    demo = commands.add_parser("demo", parents=[common, broker],
                               help="the whole daemon on the simulated device: press, record, "
                               "stop, verify")
    demo.add_argument("--seconds", type=float, default=20.0,
                      help="how long to record, both recordings together (the spoken notices "
                      "and the voice note after them make the run longer: it says how long)")
    demo.add_argument("--evidence", type=Path, help="the dock's evidence folder (default: "
                      "STORE-evidence beside the store)")
    demo.set_defaults(func=_demo)

    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument("--key", type=Path, help="the device public key (PEM); default: "
                       "keys/device.pub in the store")
    trust.add_argument("--ca", type=Path, metavar="DEVICE_CA_PEM",
                       help="the agency's device CA: every key that signed the chain must "
                       "be certified by it in an enrollment record")
    trust.add_argument("--head", action="append", default=[], metavar="SEQ:HASH",
                       help="a chain head seen outside the store (the MQTT status's "
                       "chain_head): the chain must hold it; repeatable")
    trust.add_argument("--receipt", action="append", default=[], type=Path, metavar="FILE",
                       help="a custody receipt (the custody record's line a dock keeps): "
                       "the chain must hold the head it names; repeatable")

    verify = commands.add_parser("verify", parents=[common, trust],
                                 help="verify a store's chain and segments")
    verify.add_argument("path", nargs="?", type=Path, metavar="STORE",
                        help="the store to verify (default: the configured store), or an "
                        "archive, s3://BUCKET/PREFIX (docs/archive.md)")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.set_defaults(func=_verify)

    report = commands.add_parser("report", parents=[verbosity, trust],
                                 help="a store's shifts and incidents for the dock, verified "
                                 "first: timelines and the auditor's figures")
    report.add_argument("path", type=Path, metavar="STORE_OR_EVIDENCE",
                        help="a store, a dock's folder of one device, or its evidence folder")
    report.add_argument("--officer", metavar="ID", help="only this officer's shifts")
    report.add_argument("--from", dest="since", metavar="TIME",
                        help="only shifts that end at or after TIME (ISO 8601; without an "
                        "offset, in --zone)")
    report.add_argument("--to", dest="until", metavar="TIME",
                        help="only shifts that begin at or before TIME")
    report.add_argument("--zone", default="UTC", help="the time zone the report's times are "
                        "shown in: a name (Asia/Shanghai) or an offset (+08:00); default UTC")
    report.add_argument("--html", type=Path, metavar="OUT", help="write the report here: one "
                        "self-contained HTML file")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.set_defaults(func=_report)

    selfcheck = commands.add_parser("selfcheck", parents=[common],
                                    help="the pre-shift self-check; exit 0 pass, 1 warn, 2 fail")
    selfcheck.add_argument("--json", action="store_true")
    selfcheck.set_defaults(func=_selfcheck)

    status = commands.add_parser("status", parents=[common], help="the running daemon's state")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    trigger = commands.add_parser("trigger", parents=[common],
                                  help="an external trigger: it can start a recording, never "
                                  "stop one")
    trigger.add_argument("action", choices=["start"])
    trigger.add_argument("--source", default="control", help="what fired it (holster, vehicle)")
    trigger.set_defaults(func=_trigger)

    press = commands.add_parser("press", parents=[common],
                                help="press the simulated device's record button")
    press.add_argument("--long", action="store_true",
                       help="hold it: stops a recording; on the function button, declares an "
                            "exemption")
    button = press.add_mutually_exclusive_group()
    button.add_argument("--function", action="store_true",
                        help="the function button: explains an interruption now")
    button.add_argument("--audio", action="store_true",
                        help="the audio button: starts a sound-only recording; --long stops it")
    press.set_defaults(func=_press)

    mark = commands.add_parser("mark", parents=[common],
                               help="mark the recording under way important (重要标记), as a "
                               "short press of the record button does")
    mark.set_defaults(func=_mark)
    photo = commands.add_parser("photo", parents=[common],
                                help="take a photo, as the PHOTO button does (docs/recorder.md)")
    photo.set_defaults(func=_photo)

    decrypt = commands.add_parser("decrypt", parents=[verbosity],
                                  help="decrypt a sealed file with the agency's age identity "
                                  "and check it against the chain")
    decrypt.add_argument("file", type=Path, help="a sealed .age file (from a store's sealed/)")
    decrypt.add_argument("-i", "--identity", type=Path, required=True,
                         help="the agency's age identity file (AGE-SECRET-KEY-1…)")
    decrypt.add_argument("-o", "--out", type=Path,
                         help="where the media goes, never the sealed file itself nor a "
                              "symbolic link (default: the file's name without .age, or with "
                              ".decrypted added, in the current folder)")
    decrypt.set_defaults(func=_decrypt)

    keys = commands.add_parser("keys", parents=[common],
                               help="the device's identity: request, enroll, rotate, retire "
                               "(with the daemon stopped)")
    keys.add_argument("action", choices=["show", "request", "enroll", "rotate", "retire"])
    keys.add_argument("--cert", type=Path, help="enroll: the agency-signed device certificate")
    keys.add_argument("--dock-ca", type=Path, help="enroll: the dock CA certificate(s)")
    keys.add_argument("--device-ca", type=Path,
                      help="enroll: the device CA that issued --cert (installed and sealed)")
    keys.add_argument("--recipients", type=Path,
                      help="enroll: the agency's age recipients, one age1… per line")
    keys.add_argument("--reason", default="", help="rotate, retire: why (sealed)")
    keys.set_defaults(func=_keys)
    add_dock_commands(commands)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config, args.config = load_config(args.config, args.store, getattr(args, "mqtt", None))
    return config


def _run(args: argparse.Namespace) -> int:
    from agent.device.daemon import Daemon

    # `kill -USR1 <pid>`: every thread's stack to stderr (the journal), and it runs on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config = _config(args)
    return Daemon(config, args.config).run()


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(args.config, args.store, args.seconds, args.mqtt, args.evidence)


def _verify(args: argparse.Namespace) -> int:
    from agent.evidence.verify import report_json, reports_json, stores_in, verify_store

    if args.path is not None and args.path.parts[:1] == ("s3:",):  # Path folds s3:// to s3:/
        from agent.dock.cli import verify_archive

        return verify_archive("s3://" + "/".join(args.path.parts[1:]), args.key)
    root = args.path or (args.store or _config(args).store_path)
    roots = stores_in(root)  # a dock's evidence folder holds one store per device
    outside = _outside(args, root, len(roots))
    reports = []
    for store in roots:
        report = verify_store(store, args.key, outside=outside)
        reports.append(report)
        if args.json:
            continue
        if len(roots) > 1:
            print(f"{store}:")
        print(report.summary())
        for mark in report.marks:
            print(f"mark: recording {mark['recording']} marked important at {mark['wall']} "
                  f"(record {mark['seq']}, {mark['source']})")
        for note in report.notes:
            print(f"note: {note}")
    if args.json:  # one JSON document: the report, or every device's in an evidence folder
        print(report_json(reports[0]) if len(reports) == 1 else
              reports_json(reports))
    return 0 if all(report.ok for report in reports) else 1


def _outside(args: argparse.Namespace, root: Path, stores: int) -> Outside:
    """The witnesses and the device CA given on the command line, read once for the
    `stores` in `root`; one that cannot be read, or a witness of one device given for
    several, is the caller's input to fix (exit 2)."""
    from agent.evidence.anchor import load_device_ca
    from agent.evidence.verify import Outside
    from agent.evidence.witness import parse_head, read_receipt

    if stores > 1 and (args.head or args.receipt):
        raise WitnessError(f"{root} holds {stores} devices' stores: give --head and "
                           "--receipt with the one device's folder")
    return Outside(tuple(parse_head(text) for text in args.head),
                   tuple(read_receipt(path) for path in args.receipt),
                   tuple(load_device_ca(args.ca)) if args.ca else (), str(args.ca or ""))


def _report(args: argparse.Namespace) -> int:
    """Exit 0: every store verified; 1: a store did not (its report says so, and is still
    written); 2: input that cannot be used."""
    from agent.evidence.report.page import render
    from agent.evidence.report.source import Window, read_store, reports_json
    from agent.evidence.verify import stores_in

    try:
        zone = _zone(args.zone)
        window = Window(args.officer, _moment(args.since, "--from", zone),
                        _moment(args.until, "--to", zone))
    except ValueError as exc:
        print(logs.error_line(f"bodycam report: {exc}"), file=sys.stderr)
        return 2
    if not (args.html or args.json):
        print("bodycam report: give --html OUT, --json or both", file=sys.stderr)
        return 2
    if window.since is not None and window.until is not None and window.since > window.until:
        print(f"bodycam report: --from {args.since} is after --to {args.until}",
              file=sys.stderr)
        return 2
    roots = [root for root in stores_in(args.path) if (root / "chain.jsonl").is_file()]
    if not roots:
        print(logs.error_line(f"bodycam report: {args.path}: no chain.jsonl there (neither a "
                              "store nor a dock's evidence folder)"), file=sys.stderr)
        return 2
    outside = _outside(args, args.path, len(roots))
    reports = [read_store(root, window, args.key, outside) for root in roots]
    if args.html:
        try:
            args.html.write_text(render(reports, window, time.time_ns() // 1000, zone),
                                 encoding="utf-8")
        except OSError as exc:
            print(logs.error_line(f"bodycam report: --html {args.html}: cannot be written "
                                  f"({exc.strerror})"), file=sys.stderr)
            return 2
    if args.json:
        print(reports_json(reports, window))
    else:
        for report in reports:
            print(f"{report.store}: {len(report.shifts)} shift(s), "
                  f"{report.verified.summary().splitlines()[0]}")
        print(f"wrote {args.html}")
    return 0 if all(report.verified.ok for report in reports) else 1


def _zone(name: str) -> tzinfo:
    """--zone: an IANA name or a fixed offset such as +08:00."""
    if re.fullmatch(r"[+-][0-9]{2}:[0-9]{2}", name):
        hours, minutes = int(name[1:3]), int(name[4:])
        sign = -1 if name[0] == "-" else 1
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--zone {name[:60]!r}: not a time zone (a name as Asia/Shanghai, "
                         "or an offset as +08:00)") from None


def _moment(text: str | None, option: str, zone: tzinfo) -> int | None:
    """--from/--to as µs since the epoch; a time without an offset is in --zone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} {text[:60]!r}: not a time (ISO 8601, as "
                         "2026-12-03T08:00 or 2026-12-03T08:00+08:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _selfcheck(args: argparse.Namespace) -> int:
    """Ask the running daemon (it owns the camera); with none running, check on our own."""
    from agent.device.daemon import Daemon
    from agent.device.selfcheck import SelfCheckResult

    config = _config(args)
    try:
        reply = request(Store(config.store_path).control_socket, {"cmd": "selfcheck"},
                        timeout=120)
        result = SelfCheckResult.from_record(reply)
    except ConnectionError:
        result = Daemon(config, args.config).check_once()
    print(json.dumps(result.as_record(), indent=2, ensure_ascii=False) if args.json
          else result.render())
    return int(result.overall)


def _send(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any]:
    root = args.store or _config(args).store_path
    reply = request(Store(root).control_socket, message)
    if not reply.get("ok"):
        raise ConnectionError(f"the daemon refused: {reply.get('error')}")
    return reply


def _status(args: argparse.Namespace) -> int:
    reply = _send(args, {"cmd": "status"})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    head = reply["chain_head"]
    sound_only = " (sound only)" if reply.get("mode") == "audio" else ""
    recording = (f"recording {reply['recording']}{sound_only} into {reply['current_segment']}"
                 if reply["recording"] else "standby, not recording")
    print(f"{reply['device']} ({reply['officer'] or 'no officer'}): {recording}\n"
          f"segments sealed since start: {reply['segments_sealed']}\n"
          f"chain head: seq {head['seq']} {head['hash']}")
    return 0


def _trigger(args: argparse.Namespace) -> int:
    _send(args, {"cmd": "trigger", "source": args.source})
    print("trigger sent: recording starts if it was not running")
    return 0


def _press(args: argparse.Namespace) -> int:
    _send(args, {"cmd": "press", "long": args.long, "function": args.function,
                 "audio": args.audio})
    print(f"{'long press' if args.long else 'press'} on the "
          f"{'function' if args.function else 'audio' if args.audio else 'record'} button")
    return 0


def _mark(args: argparse.Namespace) -> int:
    _send(args, {"cmd": "mark"})
    print("mark sent: sealed if a recording is under way")
    return 0


def _photo(args: argparse.Namespace) -> int:
    _send(args, {"cmd": "photo"})
    print("photo asked for: sealed as a photo record, or refused with three pulses")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from agent.device import enrollment
    from agent.evidence.chain import Chain, current_boot_id
    from agent.evidence.keys import fingerprint, load_or_create_device_key
    from hal.clock import open_clock

    config = _config(args)
    store = Store(config.store_path).prepare()
    key = load_or_create_device_key(store.keys, store.chain)
    # The fingerprint is what the dock operator types as `bodycam dock enroll --expect-key`.
    described = f"device {config.device.id}, signing key {fingerprint(key.public_key())}"
    if args.action == "show":
        enrolled = enrollment.enrolled_certificate(store.keys, key)
        print(f"{described}, {'enrolled' if enrolled else 'not enrolled'}")
        for name in ("device.pub", "current.pub", "device.csr", "device.crt", "device-ca.pem",
                     "dock-ca.pem", "recipients.txt"):
            path = store.keys / name
            print(f"  {path}: {'present' if path.exists() else 'absent'}")
        return 0
    if args.action == "request":
        print(f"{enrollment.request(store.keys, key, config.device.id)}: {described}")
        return 0
    if args.action == "enroll" and not (args.cert and args.dock_ca and args.recipients):
        raise KeyMaterialError("keys enroll needs --cert, --dock-ca and --recipients")
    chain = Chain(store.chain, key, lambda: (config.device.id, config.device.officer),
                  open_clock(config.clock).state, current_boot_id())
    try:
        if args.action == "enroll":
            handed = enrollment.Handed(
                args.cert.read_bytes(), args.recipients.read_text(), args.dock_ca.read_bytes(),
                args.device_ca.read_bytes() if args.device_ca else None)
            record = enrollment.enroll(store.keys, chain, key, config.device.id, handed,
                                       config.dock.path(store.root, config.dock.dock_ca))
        elif args.action == "rotate":
            record = enrollment.rotate(store.keys, chain, key, config.device.id, args.reason)
        else:
            record = enrollment.retire(store.keys, chain, key, args.reason)
    finally:
        chain.close()
    print(f"sealed as {record['type']} record {record['seq']}")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    """Exit 0: whole and matching the chain; 1: a mismatch or a changed file; 2: an output
    refused, a file that cannot be read or written, or no usable identity; 3: cut short
    (recovered after a power cut): what decrypts is written."""
    from agent.evidence.age import AgeError
    from agent.evidence.decrypt import OutputRefused, decrypt_file, default_output

    out = args.out or default_output(args.file)
    try:
        outcome = decrypt_file(args.file, args.identity, out)
    except AgeError as exc:
        print(logs.error_line(f"bodycam: {args.file}: {exc}"), file=sys.stderr)
        return 1
    except OutputRefused as exc:
        print(logs.error_line(f"bodycam decrypt: {exc}"), file=sys.stderr)
        return 2
    except OSError as exc:
        print(logs.error_line(f"bodycam decrypt: {exc.filename or args.file}: {exc.strerror}"),
              file=sys.stderr)
        return 2
    print(f"{args.file} -> {out}\n{outcome.describe()}")
    if outcome.matches is False:
        return 1
    return 0 if outcome.decrypted.complete else 3


if __name__ == "__main__":
    sys.exit(main())
