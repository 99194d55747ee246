"""Property: whatever user values reach a node's configuration (annex name, owners, collector,
trust domain, UID domain, idle time, lease end), the renderer either refuses them (BadInputError)
or writes a file in which HTCondor's own parser finds exactly the keys we meant, with the values
we meant, and the node's agent reads the same lease end as HTCondor does.

HTCondor's parser is ``condor_config_val -dump -verbose`` (each parameter with the file and
line that set it, and its value with macros expanded) run in the trixie chroot that ``make test`` builds for the local cloud
(/var/lib/condor-annex/root); without it (or without root, for chroot) the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from condor_annex.agent.backstop import bundle_lease_end
from condor_annex.errors import BadInputError
from condor_annex.pool.configs import annex_config

pytestmark = pytest.mark.e2e

ROOT = Path(os.environ.get("CONDOR_ANNEX_ROOT", "/var/lib/condor-annex/root"))


def _chroot_ready() -> str:
    if os.geteuid() != 0:
        return "chroot needs root"
    if not (ROOT / "usr/bin/condor_config_val").exists():
        return f"no HTCondor chroot at {ROOT} (make test builds it with build_chroot.sh)"
    return ""


@pytest.fixture(scope="module")
def condor_parse():
    """A function: config text -> ({key: expanded value} for the keys that text sets,
    {key: value} for keys HTCondor reports at their defaults), as ``condor_config_val`` reads
    it."""
    why = _chroot_ready()
    if why:
        pytest.skip(why)
    inside = Path(tempfile.mkdtemp(prefix="config-render-", dir=ROOT / "tmp"))
    path = inside / "50-annex.config"

    def parse(text: str) -> tuple[dict[str, str], dict[str, str]]:
        path.write_text(text)
        where = "/" + str(path.relative_to(ROOT))
        p = subprocess.run(["chroot", str(ROOT), "env", f"CONDOR_CONFIG={where}",
                            "condor_config_val", "-dump", "-verbose"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        # Entries are "KEY = raw value", then " # at: FILE, line N" (or " # at: <Default>"),
        # " # expanded: value".
        ours: dict[str, str] = {}
        defaults: dict[str, str] = {}
        key = value = None
        for line in p.stdout.splitlines():
            if not line.startswith(" #"):
                key, _, value = line.partition(" = ")
            elif line.startswith(f" # at: {where}, line ") and key is not None:
                assert key not in ours, f"{key} set twice"
                ours[key] = value
            elif line == " # at: <Default>" and key is not None:
                defaults[key] = value
            elif line.startswith(" # expanded: ") and key in ours:
                ours[key] = line.removeprefix(" # expanded: ")
        return ours, defaults

    yield parse
    shutil.rmtree(inside, ignore_errors=True)


def expected(name, collector, trust_domain, uid_domain, idle, owners,
             lease_end=None) -> dict[str, str]:
    """The keys annex_config means to write, and their values (as condor_config_val shows
    them: self-references such as ``$(STARTD_ATTRS)`` expanded to nothing)."""
    if collector.startswith("<"):
        host = collector[1:].split(":")[0]
    else:
        host = collector.split(":")[0]
    uid = uid_domain or trust_domain
    start = "TRUE" if not owners else f'stringListMember(TARGET.Owner, "{",".join(owners)}")'
    lease = {} if lease_end is None else {"AnnexLeaseEnd": str(lease_end)}
    attrs = "AnnexName IsAnnex" + ("" if lease_end is None else " AnnexLeaseEnd")
    return {
        "CONDOR_HOST": host, "COLLECTOR_HOST": collector, "UID_DOMAIN": uid,
        "FILESYSTEM_DOMAIN": uid, "TRUST_DOMAIN": trust_domain,
        # Nodes reach the pool through the collector's connection broker (no inbound port).
        "CCB_ADDRESS": collector,
        "DAEMON_LIST": "MASTER STARTD", "SEC_DEFAULT_AUTHENTICATION_METHODS": "IDTOKENS",
        "SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS", "SEC_DEFAULT_INTEGRITY": "REQUIRED",
        "SEC_DEFAULT_ENCRYPTION": "REQUIRED",
        "ALLOW_ADMINISTRATOR": f"condor@{trust_domain}/*, root@{trust_domain}/*",
        "AnnexName": f'"{name}"', "IsAnnex": "True", **lease, "STARTD_ATTRS": attrs,
        "MASTER_ATTRS": attrs, "START": start,
        "STARTER_ALLOW_RUNAS_OWNER": "False", "STARTD_NOCLAIM_SHUTDOWN": str(idle),
        "MASTER.DAEMON_SHUTDOWN_FAST":
            "(STARTD_StartTime == 0) && ((CurrentTime - DaemonStartTime) > 10)",
        "UPDATE_INTERVAL": "15", "MASTER_UPDATE_INTERVAL": "60",
    }


def assert_reads_back(parsed: tuple[dict[str, str], dict[str, str]],
                      meant: dict[str, str]) -> None:
    """The file sets exactly the keys ``meant``, with those values.  HTCondor reports a key
    whose value equals its built-in default as coming from ``<Default>`` (``START = TRUE``,
    ``STARTD_NOCLAIM_SHUTDOWN = 0``): such a key counts as written if the default is the
    value meant (compared without case, as HTCondor compares booleans)."""
    ours, defaults = parsed
    ours = {k: " ".join(v.split()) for k, v in ours.items()}
    assert set(ours) <= set(meant), f"keys nobody meant: {sorted(set(ours) - set(meant))}"
    for key, value in meant.items():
        if key in ours:
            assert ours[key] == value, (key, ours[key], value)
        else:
            assert defaults.get(key, "").casefold() == value.casefold(), (key, value)


# Hostile text: what breaks configuration files (newlines, continuations, macros, quotes,
# comments, list separators, assignments) mixed with ordinary characters.
_NASTY = st.text(alphabet=st.sampled_from(list("aZ09.-_:@,/ \t\n\r\\\"'$()#=<>?&[]{}\x00\x0bé")
                                          + ["\u2028", "\x85"]), max_size=24)


def _mostly(good, bad=_NASTY):
    """``good`` three times in four, else hostile text: enough renders reach HTCondor."""
    return st.one_of(good, good, good, bad)


_NAMES = _mostly(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,26}", fullmatch=True))
_OWNER = _mostly(st.one_of(st.from_regex(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,12}", fullmatch=True),
                           st.sampled_from(["alice", "bob.smith", "_svc", "x-1"])))
_HOST = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True)
_COLLECTOR = _mostly(st.one_of(
    _HOST, st.builds(lambda h, p: f"{h}:{p}", _HOST, st.integers(1, 65535)),
    st.builds(lambda h, p: f"<{h}:{p}?sock=collector>", _HOST, st.integers(1, 65535))),
    st.one_of(_NASTY, st.builds(lambda h, n: h + n, _HOST, _NASTY)))
_DOMAIN = _mostly(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAMES, collector=_COLLECTOR, trust_domain=_DOMAIN,
       uid_domain=st.one_of(st.just(""), _DOMAIN),
       idle=_mostly(st.integers(0, 7 * 86400), st.one_of(st.integers(-5, 10 ** 7),
                                                           st.booleans())),
       owners=st.lists(_OWNER, max_size=3),
       lease_end=st.one_of(st.none(), _mostly(st.integers(1, 4 * 10 ** 9),
                                              st.one_of(st.integers(-5, 0), st.booleans()))))
def test_rendered_config_holds_exactly_the_keys_we_meant(condor_parse, name, collector,
                                                         trust_domain, uid_domain, idle, owners,
                                                         lease_end):
    try:
        text = annex_config(annex_name=name, collector=collector, trust_domain=trust_domain,
                            idle_seconds=idle, owners=tuple(owners), uid_domain=uid_domain,
                            lease_end=lease_end)
    except BadInputError as e:
        assert "\n" not in str(e)
        event("refused: " + str(e).split(":")[0])
        return
    event("rendered")
    parsed = condor_parse(text)
    assert_reads_back(parsed,
                      expected(name, collector, trust_domain, uid_domain, idle, owners,
                               lease_end))
    # The instance-side backstop reads the lease end HTCondor reads (or none, as HTCondor).
    assert bundle_lease_end(text) == lease_end
    assert parsed[0].get("AnnexLeaseEnd") == (None if lease_end is None else str(lease_end))


def test_an_owner_with_a_quote_and_a_newline_cannot_add_a_line():
    # The defect of issue 8: an owner value wrote its own START = TRUE into the node's config.
    with pytest.raises(BadInputError, match="^owner: "):
        annex_config(annex_name="a1", collector="cm:9618", trust_domain="pool.test",
                     idle_seconds=900, owners=('alice", "x")\nSTART = TRUE\n#',))


def test_ordinary_values_are_accepted_and_read_back(condor_parse):
    args = ("a-1", "<10.0.0.1:9618?sock=collector>", "pool.test", "uid.test", 900,
            ("alice", "bob.smith"))
    text = annex_config(annex_name=args[0], collector=args[1], trust_domain=args[2],
                        uid_domain=args[3], idle_seconds=args[4], owners=args[5])
    assert_reads_back(condor_parse(text), expected(*args))


def test_lease_end_is_read_back_by_htcondor_and_by_the_agent(condor_parse):
    text = annex_config(annex_name="a-1", collector="cm.example.org:9618",
                        trust_domain="pool.test", idle_seconds=900, lease_end=1_900_000_123)
    assert_reads_back(condor_parse(text), expected("a-1", "cm.example.org:9618", "pool.test",
                                                   "", 900, (), 1_900_000_123))
    assert bundle_lease_end(text) == 1_900_000_123


def _config_val(text: str, subsystem: str, knob: str) -> str:
    """``condor_config_val -subsystem SUBSYSTEM KNOB`` of ``text`` in the chroot."""
    inside = Path(tempfile.mkdtemp(prefix="config-render-", dir=ROOT / "tmp"))
    try:
        (inside / "condor_config").write_text(text)
        where = "/" + str((inside / "condor_config").relative_to(ROOT))
        p = subprocess.run(["chroot", str(ROOT), "env", f"CONDOR_CONFIG={where}",
                            "condor_config_val", "-subsystem", subsystem, knob],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()
    finally:
        shutil.rmtree(inside, ignore_errors=True)


def test_central_manager_accepts_ccb_registrations_from_annexes_in_the_collector_only():
    """A CCB registration is authorized at DAEMON by the CCB server (the collector); the annex
    identities get DAEMON there, and nowhere else on the central manager."""
    why = _chroot_ready()
    if why:
        pytest.skip(why)
    from condor_annex.pool.configs import central_manager_config

    text = central_manager_config(local_dir="/var/lib/cm", etc_dir="/etc/cm", host="10.200.0.2",
                                  trust_domain="pool.test")
    collector = [x.strip() for x in _config_val(text, "COLLECTOR", "ALLOW_DAEMON").split(",")]
    assert "*@annex/*" in collector and "condor@*/*" in collector
    for other in ("SCHEDD", "NEGOTIATOR", "MASTER"):
        assert "annex" not in _config_val(text, other, "ALLOW_DAEMON"), other
    # The broker answers the schedd's and tools' connection requests at READ.
    assert _config_val(text, "COLLECTOR", "ALLOW_READ") == "*"
