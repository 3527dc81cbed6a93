"""The dock's reading of a chain it has not verified yet: which names it may act on.

The pull reads a device's chain before the verifier runs (to know what to fetch), and
`bodycam verify s3://` reads an archived chain before it downloads the files into a
store: in both, whatever was sent is read, and a name that could point outside the folder
is never used for a file.
"""

from __future__ import annotations

import re
from typing import Any

from agent.evidence.chain import SEALED_FILE_TYPES

_SEALED_NAME = re.compile(r"sealed/([0-9]{8})\.(ts|wav|jpg)(\.age)?")


def sealed_file(record: dict[str, Any]) -> str | None:
    """The file a sealed-file record names, when the name is of the documented form for its
    seq and the record gives a size and a SHA-256 to check it by; else None. Read before
    the verifier runs, so from whatever a device sent: a record of another shape, or a name
    that could point outside the folder, is never acted on, and the verifier reports it."""
    kind, payload = record.get("type"), record.get("payload")
    if not isinstance(kind, str) or kind not in SEALED_FILE_TYPES or \
            not isinstance(payload, dict) or type(payload.get("size")) is not int or \
            not isinstance(payload.get("sha256"), str):
        return None
    match = _SEALED_NAME.fullmatch(str(payload.get("file")))
    return payload["file"] if match and int(match.group(1)) == record["seq"] else None
