"""EC2 GetConsoleOutput for the local cloud's instances (a gateway rule).

moto answers GetConsoleOutput with canned text for any instance.  On EC2 it returns the
instance's serial console output, base64-encoded, the most recent 64 KiB, with the time it was
last updated ("GetConsoleOutput", docs.aws.amazon.com/AWSEC2/latest/APIReference/
API_GetConsoleOutput.html: ``instanceId``, ``output``, ``timestamp``; "Only the most recent
64 KB of console output is available").  The local cloud keeps each instance's console in a file
(:func:`~condor_annex.providers.local.instance_root.console_path`: what cloud-init, the init
stand-in and services writing to /dev/console print), and this rule answers from it; an
instance without a console file (not booted yet) gets an empty ``output``, as a just-launched
EC2 instance does; an unknown instance goes on to moto (its InvalidInstanceID error).
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from condor_annex.providers.local.gateway import Call, Reply, StrictRule
from condor_annex.providers.local.instance_root import console_path

#: EC2 keeps the most recent 64 KiB of console output.
CONSOLE_OUTPUT_BYTES = 64 * 1024
_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def console_tail(path: Path, limit: int = CONSOLE_OUTPUT_BYTES) -> tuple[bytes, float] | None:
    """The last ``limit`` bytes of the console file and its mtime (epoch seconds), or None
    when there is no such file."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - limit))
            return f.read(), os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None


class ConsoleOutput(StrictRule):
    """The rule of the module docstring.

    Args:
        gateway: the local cloud's gateway.
        state_dir: the local cloud's state dir (where the console files are).
        known: instance id -> True when the local cloud booted (or is booting) it.
    """

    def __init__(self, gateway, state_dir: Path, known) -> None:
        super().__init__(gateway)
        self.state_dir, self.known = state_dir, known

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """The GetConsoleOutput reply for a local instance, else None (forwarded to moto)."""
        if call.service != "ec2" or call.operation != "GetConsoleOutput":
            return None
        iid = dict(call.params).get("InstanceId", "")
        tail = console_tail(console_path(self.state_dir, iid)) if iid else None
        if tail is None and not (iid and self.known(iid)):
            return None
        data, mtime = tail if tail is not None else (b"", datetime.now(timezone.utc).timestamp())
        stamp = datetime.fromtimestamp(mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse '
               f'xmlns="{_XMLNS}"><requestId>{uuid.uuid4()}</requestId>'
               f"<instanceId>{escape(iid)}</instanceId><timestamp>{stamp}</timestamp>"
               f"<output>{base64.b64encode(data).decode()}</output>"
               "</GetConsoleOutputResponse>")
        return 200, [("Content-Type", "text/xml;charset=UTF-8")], xml.encode()
