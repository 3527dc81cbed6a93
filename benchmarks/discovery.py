"""Discovery on the dock link: how soon a dock sees a device whose link gets its address, what
announcing and browsing cost while nothing changes, and how soon a goodbye is heard
(docs/performance.md, "Discovery on the dock link").

Real mDNS on a veth pair in a private network namespace (tests/support/netns.py); needs root.
The device's announcer and the dock's discovery run in this one process.

    sudo python benchmarks/discovery.py [--idle-s 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.device.offload.announce import Announcer
from agent.dock.discovery import Discovery
from tests.support.netns import dock_link


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()
    with dock_link(device_addressed=False) as link:
        discovery = Discovery((link.dock_interface,))
        discovery.start()
        announcer = Announcer("TEST-0001", link.device_address, 8443)
        announcer.start()
        time.sleep(3)
        start = time.monotonic()
        link.address_device()
        while not discovery.bays():
            time.sleep(0.01)
        print(f"address on the device's link -> bay at the dock: "
              f"{time.monotonic() - start:.2f} s")
        time.sleep(2)
        cpu = time.process_time()
        time.sleep(args.idle_s)
        print(f"CPU of the announcer and the discovery, idle: "
              f"{time.process_time() - cpu:.3f} s in {args.idle_s:.0f} s")
        start = time.monotonic()
        announcer.close()
        closed = time.monotonic() - start
        while discovery.bays():
            time.sleep(0.01)
        print(f"announcer closed (goodbye sent) in {closed:.2f} s; bay gone "
              f"{time.monotonic() - start:.2f} s after the close began")
        discovery.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
