"""Fault injection for the local cloud: make its safety nets visible on purpose.

``condor_annex local inject KIND`` writes the injection to ``STATE_DIR/inject.json``; the
daemon reads that file on every pass (the scheduler on each tick, the Lambda invoker before
each invocation), so an injection takes effect within a second and needs no restart:

* ``lambda-error N``: the next N invocations of the lease function fail before its code runs
  (each failed attempt uses one; Lambda's asynchronous retries then come back, and after the
  last retry the event goes to the on-failure destination);
* ``schedule-early``: every one-time ``at()`` schedule fires at the first second of its minute,
  the earliest moment EventBridge Scheduler may fire it;
* ``backstop-off``: nodes booted from now on run their agent with a lease margin of a day, so
  the instance-side backstop never acts during a test (isolates the cloud-side kill switches);
* ``no-join N``: the next N instances booted boot normally (cloud-init runs the user data, the
  agent installs the bundle and starts HTCondor) but never join the pool, because the network
  drops their traffic to the collector (see below); each instance booted uses one;
* ``interrupt INSTANCE_ID [--rebalance] [--notice 120s]``: EC2 interrupts that Spot Instance:
  its IMDS serves the interruption notice (``spot/instance-action``) and the local cloud
  terminates it when the notice runs out; with ``--rebalance``, a rebalance recommendation
  only (``events/recommendations/rebalance``), nothing terminated (:mod:`.interruptions`);
  the daemon takes the request on its next pass;
* ``none``: clear every injection (and the interruptions not yet taken).

How ``no-join`` works, and why that way: the most common reason real annex nodes boot and never
join is the network, not the node: the collector's security group does not admit the annex's
instances, or a network ACL denies them the collector's port.  Security groups and network
ACLs act outside the instance and drop what they do not allow without an answer, so the node's
connections to the collector time out and nothing on the instance is broken or tells why.  The
local cloud does the same from outside the product: when it boots an instance that takes a
``no-join``, it adds to the network (the hub namespace's bridge, which every instance's packets
cross) a rule dropping that instance's TCP and UDP packets to the collector's address and port
(:mod:`.network_acl`), before the instance powers on, and removes it when the instance is gone.
Nothing in the instance, its image, its user data or the product changes, and everything else
keeps working: IMDS (credentials, tags), the AWS endpoint (the bundle from S3, the agent's log
upload) and the console (GetConsoleOutput).  The console then shows cloud-init and the agent
booting as usual, up to the agent's ``starting condor_master`` line, and no join; the daemon's
log (``cloud.log``) names the instance and the rule.

Injections add up (``lambda-error 3`` then ``schedule-early`` keeps both); ``lambda-error N``
and ``no-join N`` set their count to N. The file is JSON ``{"lambda_error": N,
"schedule_early": bool, "backstop_off": bool, "no_join": N, "interrupt": [request, ...]}``
(requests as :meth:`.interruptions.InterruptRequest.as_json`), read and
written under an ``flock`` on ``inject.json.lock`` (the CLI writes, the daemon consumes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from condor_annex import validate
from condor_annex.errors import BadInputError
from condor_annex.providers.local.interruptions import InterruptRequest

#: The kinds ``local inject`` takes.
KINDS = ("lambda-error", "schedule-early", "backstop-off", "no-join", "interrupt", "none")
#: What ``local inject`` takes, for its messages.
_WHAT = ("lambda-error N, schedule-early, backstop-off, no-join N, interrupt INSTANCE_ID "
         "[--rebalance] [--notice 120s] or none")
#: The kinds that take a count N (``local inject KIND N``), with what N counts.
COUNTED = {"lambda-error": "the number of invocations that fail",
           "no-join": "the number of instances that never join"}
#: The agent's lease margin (seconds) on nodes booted under ``backstop-off``.
BACKSTOP_OFF_MARGIN_S = 86400
FILE_NAME = "inject.json"


def parse(words: list[str]) -> tuple[str, int]:
    """Check ``local inject`` arguments: ``["lambda-error", "3"]``, ``["no-join", "2"]``,
    ``["schedule-early"]``, ``["backstop-off"]`` or ``["none"]``; returns ``(kind, count)``
    (count 0 unless the kind takes one, :data:`COUNTED`).  ``interrupt`` is checked by
    :func:`.interruptions.parse_interrupt` (it takes flags); here it is refused.

    Raises:
        BadInputError: unknown kind, a missing/extra argument, or N not a whole number from 1
            to 10000 (one line naming ``local inject`` and the fix).
    """
    if not words:
        raise BadInputError(f"local inject: say what to inject: {_WHAT}")
    kind, rest = words[0], words[1:]
    if kind not in KINDS or kind == "interrupt":
        raise BadInputError(f"local inject: unknown kind {validate.shown(kind)}; use {_WHAT}")
    if kind in COUNTED:
        if len(rest) != 1:
            raise BadInputError(f"local inject {kind}: give {COUNTED[kind]}, e.g. local inject "
                                f"{kind} 3")
        return kind, validate.count(rest[0], f"local inject {kind}")
    if rest:
        raise BadInputError(f"local inject {kind}: takes no value (got "
                            f"{validate.shown(' '.join(rest))})")
    return kind, 0


class Injections:
    """The injection file of one local cloud (``STATE_DIR/inject.json``).

    Every method reads the file afresh, so the daemon sees the CLI's changes at once. A
    missing or unreadable file means no injection.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(self.path) + ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, self.path)   # readers never see half a file

    def read(self) -> dict:
        """``{"lambda_error": int, "schedule_early": bool, "backstop_off": bool, "no_join":
        int, "interrupt": [InterruptRequest, ...]}`` as now in force (interruptions: those
        the daemon has not taken yet)."""
        with self._locked():
            data = self._read()
        return {"lambda_error": _count(data.get("lambda_error")),
                "schedule_early": bool(data.get("schedule_early")),
                "backstop_off": bool(data.get("backstop_off")),
                "no_join": _count(data.get("no_join")),
                "interrupt": _requests(data.get("interrupt"))}

    def add_interrupt(self, request: InterruptRequest) -> None:
        """Queue ``local inject interrupt`` for the daemon (:meth:`take_interrupts`).

        Raises:
            OSError: the state dir cannot be written (e.g. not root).
        """
        with self._locked():
            data = self._read()
            data["interrupt"] = [r.as_json() for r in _requests(data.get("interrupt"))] \
                + [request.as_json()]
            self._write(data)

    def take_interrupts(self) -> list[InterruptRequest]:
        """The interruption requests queued since the last call, in order; they leave the file
        (the daemon's :class:`.interruptions.SpotInterruptions` holds them from then on)."""
        with self._locked():
            data = self._read()
            taken = _requests(data.get("interrupt"))
            if "interrupt" in data:
                del data["interrupt"]
                self._write(data)
        return taken

    def apply(self, kind: str, count: int = 0) -> None:
        """Set an injection (``kind`` from :func:`parse`); ``none`` clears them all.

        Raises:
            OSError: the state dir cannot be written (e.g. not root).
        """
        with self._locked():
            data = {} if kind == "none" else self._read()
            if kind == "lambda-error":
                data["lambda_error"] = int(count)
            elif kind == "no-join":
                data["no_join"] = int(count)
            elif kind == "schedule-early":
                data["schedule_early"] = True
            elif kind == "backstop-off":
                data["backstop_off"] = True
            self._write(data)

    def _take(self, key: str) -> bool:
        """Use one of counted injection ``key``: True (and its count goes down by one) when one
        is pending, else False."""
        with self._locked():
            data = self._read()
            left = _count(data.get(key))
            if left <= 0:
                return False
            data[key] = left - 1
            self._write(data)
            return True

    def take_lambda_error(self) -> bool:
        """Use one injected Lambda error: True (and the count goes down by one) when one is
        pending, else False."""
        return self._take("lambda_error")

    def take_no_join(self) -> bool:
        """Use one ``no-join`` for an instance booting now: True (and the count goes down by
        one) when one is pending, else False."""
        return self._take("no_join")

    def schedule_early(self) -> bool:
        """Whether one-time schedules fire at the first second of their minute."""
        return self.read()["schedule_early"]

    def backstop_off(self) -> bool:
        """Whether nodes booted now get an agent whose backstop never acts."""
        return self.read()["backstop_off"]

    def describe(self) -> list[str]:
        """The injections in force, as ``local inject`` spells them, e.g.
        ``["lambda-error 2", "schedule-early", "no-join 1"]`` (``local status --json``'s
        ``injected``)."""
        data = self.read()
        out = [f"lambda-error {data['lambda_error']}"] if data["lambda_error"] > 0 else []
        return out + (["schedule-early"] if data["schedule_early"] else []) + \
            (["backstop-off"] if data["backstop_off"] else []) + \
            ([f"no-join {data['no_join']}"] if data["no_join"] > 0 else []) + \
            [r.describe() for r in data["interrupt"]]


def _count(value: object) -> int:
    """A count from the file: a whole number >= 0 (anything else, e.g. a hand-edited "x", is
    0: no injection)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


def _requests(value: object) -> list[InterruptRequest]:
    """The interruption requests from the file (anything that is not one is skipped)."""
    if not isinstance(value, list):
        return []
    return [r for r in map(InterruptRequest.from_json, value) if r is not None]


def set_lease_sweep(scheduler_client, stack_name: str, enabled: bool) -> None:
    """Enable or disable the stack's lease sweep schedule (``<stack>-lease-sweep``) through the
    emulator's Scheduler API: tests and benchmarks switch one kill switch off to isolate
    another.

    Args:
        scheduler_client: a boto3 ``scheduler`` client for the local cloud's endpoint.
        stack_name: the setup stack's name (``SetupOutputs.stack_name``).
        enabled: True for ENABLED, False for DISABLED.

    Raises:
        botocore.exceptions.ClientError: the schedule does not exist.
    """
    name = f"{stack_name}-lease-sweep"
    s = scheduler_client.get_schedule(Name=name)
    keep = ("Name", "GroupName", "ScheduleExpression", "Target", "FlexibleTimeWindow",
            "Description", "ScheduleExpressionTimezone")
    scheduler_client.update_schedule(**{k: s[k] for k in keep if k in s},
                                     State="ENABLED" if enabled else "DISABLED")
