"""`bodycam`: the daemon, the demo, the verifier, and the local controls of a running daemon."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from agent.chain import ChainBusyError
from agent.config import Config, ConfigError, load_config
from agent.control import request
from agent.dock_cli import add_commands as add_dock_commands
from agent.keys import KeyMaterialError
from agent.store import Store


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, KeyMaterialError, ChainBusyError) as exc:
        print(f"bodycam: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"bodycam: {exc}", file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML configuration (default: the "
                        "simulated device, config/sim.toml)")
    common.add_argument("--store", type=Path, help="store folder (overrides [store] path)")
    common.add_argument("-v", "--verbose", action="store_true")

    parser = argparse.ArgumentParser(prog="bodycam", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the recorder daemon")
    run.set_defaults(func=_run)

    demo = commands.add_parser("demo", parents=[common],
                               help="the whole daemon on the simulated device: press, record, "
                               "stop, verify")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to record")
    demo.add_argument("--evidence", type=Path, help="the dock's evidence folder (default: "
                      "STORE-evidence beside the store)")
    demo.set_defaults(func=_demo)

    verify = commands.add_parser("verify", parents=[common],
                                 help="verify a store's chain and segments")
    verify.add_argument("path", nargs="?", type=Path, metavar="STORE",
                        help="the store to verify (default: the configured store)")
    verify.add_argument("--key", type=Path, help="the device public key (PEM); default: "
                        "keys/device.pub in the store")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.set_defaults(func=_verify)

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
    press.add_argument("--long", action="store_true", help="hold it: the stop gesture")
    press.set_defaults(func=_press)
    add_dock_commands(commands)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config, args.config = load_config(args.config, args.store)
    return config


def _run(args: argparse.Namespace) -> int:
    from agent.daemon import Daemon

    config = _config(args)
    return Daemon(config, args.config).run()


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(args.config, args.store, args.seconds, args.evidence)


def _verify(args: argparse.Namespace) -> int:
    from agent.verify import report_json, stores_in, verify_store

    root = args.path or (args.store or _config(args).store_path)
    roots = stores_in(root)  # a dock's evidence folder holds one store per device
    failed = 0
    for store in roots:
        report = verify_store(store, args.key)
        failed += not report.ok
        if args.json:
            print(report_json(report))
            continue
        if len(roots) > 1:
            print(f"{store}:")
        print(report.summary())
        for note in report.notes:
            print(f"note: {note}")
    return 1 if failed else 0


def _selfcheck(args: argparse.Namespace) -> int:
    """Ask the running daemon (it owns the camera); with none running, check on our own."""
    from agent.daemon import Daemon
    from agent.selfcheck import SelfCheckResult

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


def _send(args: argparse.Namespace, message: dict[str, object]) -> dict[str, object]:
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
    recording = (f"recording {reply['recording']} into {reply['current_segment']}"
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
    _send(args, {"cmd": "press", "long": args.long})
    print("long press" if args.long else "press")
    return 0


if __name__ == "__main__":
    sys.exit(main())
