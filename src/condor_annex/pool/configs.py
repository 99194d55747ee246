"""HTCondor configuration text: the per-annex bundle, and the local cloud's node images.

Follows the HTCondor manual's *Configuration Macros* (STARTD_NOCLAIM_SHUTDOWN,
DAEMON_SHUTDOWN_FAST, STARTD_ATTRS, TRUST_DOMAIN) and the original tool's
``00ec2-dynamic.config`` (reference §3), with a per-annex IDTOKEN instead of a pool password.

Nodes reach the pool through HTCondor's connection broker (manual, *Networking, Port Usage, and
CCB*: "HTCondor Connection Brokering"): every node daemon registers with the collector as its
CCB server (``CCB_ADDRESS = $(COLLECTOR_HOST)``) and the pool's schedd and tools ask the broker
for a reverse connection, so an instance needs no inbound port (no tcp/9618 from 0.0.0.0/0).
The CCB server authorizes registrations at the DAEMON level and connection requests at READ
(manual, *Security and CCB*), so the pool's collector must grant DAEMON to the annex identities
(``annex-<name>@annex``); :func:`central_manager_config` does, for the collector only.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from typing import NoReturn

from condor_annex import validate
from condor_annex.errors import BadInputError
from condor_annex.pool import annex_admin
from condor_annex.validate import shown


def _quote(value: str) -> str:
    """A ClassAd string literal for ``value`` (every value is checked first; quote anyway)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: A host name or IPv4 address.
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})"
#: ``host[:port]`` or an HTCondor sinful string ``<host:port?params>``.
_COLLECTOR_RE = re.compile(rf"({_HOST})(?::[0-9]{{1,5}})?|<({_HOST}):[0-9]{{1,5}}"
                           r"(?:\?[A-Za-z0-9=&._:+,\-\[\]]{0,500})?>", re.ASCII)
#: TRUST_DOMAIN / UID_DOMAIN: a domain-like word (written raw into several knobs).
_DOMAIN_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252})", re.ASCII)
#: An authorization identity ``user@domain`` (written raw into ALLOW_ADMINISTRATOR).
_IDENTITY_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9._-]{0,63}"
                          r"@[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252})", re.ASCII)
#: Where ``--config-dir`` files go in the bundle: after ``50-annex.config`` (so they override
#: it) and before the agent's ``90-annex-interruption.config`` (whose ``START = False`` must
#: win); HTCondor reads LOCAL_CONFIG_DIR in name order.
USER_CONFIG_PREFIX = "config.d/60-user-"


def _refuse(what: str, value: object, rule: str) -> NoReturn:
    raise BadInputError(f"{what}: {shown(value)} cannot be written into the annex's HTCondor "
                        f"configuration; {rule}")


def _checked(what: str, value: object, pattern: re.Pattern, rule: str) -> str:
    """``value`` if it matches ``pattern`` in full; a value written raw into configuration must
    not hold a newline (a line of its own), ``\\`` (a continuation), ``$`` (a macro), ``#``,
    ``,`` or spaces (list separators), so each pattern excludes them."""
    if not isinstance(value, str) or validate.has_control(value) \
            or not pattern.fullmatch(value):
        _refuse(what, value, rule)
    return value


def annex_config(*, annex_name: str, collector: str, trust_domain: str, idle_seconds: int,
                 owners: tuple[str, ...] = (), uid_domain: str = "",
                 lease_end: int | None = None, admin_identity: str = "") -> str:
    """Render ``config.d/50-annex.config`` for one annex: the only place user values are
    written into a node's configuration, so each is checked here (again) and none can add a
    line or a key.

    Args:
        annex_name: validated annex name; advertised as ``AnnexName`` with ``IsAnnex = True``.
        collector: ``host[:port]`` (or a sinful string ``<host:port?...>``) of the collector
            the instances report to.
        trust_domain: the pool's TRUST_DOMAIN (the token's issuer must match it).
        idle_seconds: STARTD_NOCLAIM_SHUTDOWN, seconds (0 to 7 days); the master then exits
            and the instance powers off (shutdown behaviour *terminate*).
        owners: users whose jobs may start here; empty means any user of the pool.
        uid_domain: the pool's UID_DOMAIN / FILESYSTEM_DOMAIN (default: trust_domain).
        lease_end: the lease end, epoch seconds; written as ``AnnexLeaseEnd`` (advertised by
            the startd and the master) so the node's agent, its instance-side backstop, knows
            when the lease ends even if every cloud-side piece fails.  None: not written.
        admin_identity: the annex's administrator identity (``<owner>@annex-<name>``,
            :mod:`condor_annex.pool.annex_admin`), granted ADMINISTRATOR and CONFIG so that
            HTCondor's admin tools work on the node (manual, *Authorization*: condor_off and
            condor_drain need ADMINISTRATOR; condor_config_val -rset needs CONFIG with
            ENABLE_RUNTIME_CONFIG, what ``use feature:Remote_Runtime_Config`` sets, and
            SETTABLE_ATTRS_CONFIG).  "" grants nobody.

    Returns:
        the config file's text.

    Raises:
        BadInputError: a value that is not what its knob holds (naming the knob or flag).
    """
    validate.annex_name(annex_name, "annex name")
    m = _COLLECTOR_RE.fullmatch(collector) if isinstance(collector, str) else None
    if m is None or validate.has_control(collector):
        _refuse("ANNEX_COLLECTOR (or COLLECTOR_HOST)", collector,
                "give host[:port], e.g. cm.example.org:9618")
    host = m.group(1) or m.group(2)
    _checked("ANNEX_TRUST_DOMAIN (or TRUST_DOMAIN)", trust_domain, _DOMAIN_RE,
             "give a domain, e.g. example.org")
    uid_domain = uid_domain or trust_domain
    _checked("UID_DOMAIN", uid_domain, _DOMAIN_RE, "give a domain, e.g. example.org")
    if isinstance(idle_seconds, bool) or not isinstance(idle_seconds, int) \
            or not 0 <= idle_seconds <= validate.MAX_DURATION_SECONDS:
        _refuse("idle time", idle_seconds, "give whole seconds from 0 to 7 days")
    for owner in owners:
        validate.owner(owner, "owner")
    if lease_end is not None and (isinstance(lease_end, bool) or not isinstance(lease_end, int)
                                  or lease_end <= 0):
        _refuse("lease end", lease_end, "give whole epoch seconds")
    admins = "condor@{0}/*, root@{0}/*".format(trust_domain)
    admin_lines = ""
    if admin_identity:
        _checked("annex administrator", admin_identity, _IDENTITY_RE, "give user@domain")
        admins = f"{admin_identity}/*, {admins}"
        # -rset may change any knob: no more than --config-dir already can (the owner's node).
        admin_lines = ("ALLOW_CONFIG = $(ALLOW_ADMINISTRATOR)\nENABLE_RUNTIME_CONFIG = True\n"
                       "SETTABLE_ATTRS_CONFIG = *\n")
    lease_attr = f"AnnexLeaseEnd = {lease_end}\n" if lease_end is not None else ""
    lease_list = " AnnexLeaseEnd" if lease_end is not None else ""
    start = "TRUE"
    if owners:
        start = f'stringListMember(TARGET.Owner, {_quote(",".join(owners))})'
    return f"""\
# condor-annex: configuration for annex {annex_name} (written by condor_annex create)
CONDOR_HOST = {host}
COLLECTOR_HOST = {collector}
UID_DOMAIN = {uid_domain}
FILESYSTEM_DOMAIN = {uid_domain}
TRUST_DOMAIN = {trust_domain}
DAEMON_LIST = MASTER STARTD
CCB_ADDRESS = $(COLLECTOR_HOST)
SEC_DEFAULT_AUTHENTICATION_METHODS = IDTOKENS
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
SEC_DEFAULT_INTEGRITY = REQUIRED
SEC_DEFAULT_ENCRYPTION = REQUIRED
ALLOW_ADMINISTRATOR = {admins}
{admin_lines}AnnexName = {_quote(annex_name)}
IsAnnex = True
{lease_attr}STARTD_ATTRS = $(STARTD_ATTRS) AnnexName IsAnnex{lease_list}
MASTER_ATTRS = $(MASTER_ATTRS) AnnexName IsAnnex{lease_list}
START = {start}
STARTER_ALLOW_RUNAS_OWNER = False
STARTD_NOCLAIM_SHUTDOWN = {idle_seconds}
MASTER.DAEMON_SHUTDOWN_FAST = (STARTD_StartTime == 0) && ((CurrentTime - DaemonStartTime) > 10)
UPDATE_INTERVAL = 15
MASTER_UPDATE_INTERVAL = 60
"""


def bundle_tarball(files: dict[str, tuple[bytes, int]]) -> bytes:
    """Pack ``{relative path: (content, mode)}`` into a tar.gz (the config bundle).

    Paths are relative to HTCondor's config dir (``config.d/...``, ``tokens.d/...``).  Built in
    memory: the bundle holds a credential, so it never touches the disk or the current directory
    (the original left it in cwd after a failed upload; reference §10).
    """
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, now
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def annex_bundle(*, annex_name: str, collector: str, trust_domain: str, idle_seconds: int,
                 token: str, owners: tuple[str, ...] = (), lease_end: int | None = None,
                 admin_key: str = "", admin_identity: str = "",
                 extra_config: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """The per-annex config bundle: ``config.d/50-annex.config`` + ``tokens.d/annex.token``,
    the annex's signing key ``passwords.d/annex-<name>`` and the user's ``--config-dir``
    files as ``config.d/60-user-<name>`` (:data:`USER_CONFIG_PREFIX`).

    Args:
        token: the annex's IDTOKEN (a JWT); stored mode 600.
        lease_end: the lease end, epoch seconds (``AnnexLeaseEnd``; see :func:`annex_config`).
        admin_key: the annex's own signing key (:mod:`condor_annex.pool.annex_admin`), stored
            mode 600 under ``passwords.d``; "" for none.
        admin_identity: the identity its administrator token carries (with ``admin_key``).
        extra_config: (file name, content) of each ``--config-dir`` file
            (:func:`condor_annex.service.config_dir.read_config_dir` checked them).

    Returns:
        tar.gz bytes, ready for :meth:`Provider.put_bundle`.

    Raises:
        BadInputError: a value that cannot be written into the node's configuration.
    """
    cfg = annex_config(annex_name=annex_name, collector=collector, trust_domain=trust_domain,
                       idle_seconds=idle_seconds, owners=owners, lease_end=lease_end,
                       admin_identity=admin_identity if admin_key else "")
    files = {
        "config.d/50-annex.config": (cfg.encode(), 0o644),
        "tokens.d/annex.token": (token.strip().encode() + b"\n", 0o600),
    }
    if admin_key:
        files[annex_admin.key_member(annex_name)] = (
            annex_admin.checked_key(admin_key).encode(), 0o600)
    for name, content in extra_config:
        files[USER_CONFIG_PREFIX + name] = (content, 0o644)
    return bundle_tarball(files)


def bundle_extras(bundle: bytes, annex_name: str) -> dict:
    """What an annex's stored bundle carries besides what :func:`annex_config` renders: its
    signing key, the administrator identity and the ``--config-dir`` files, so that
    re-rendering the bundle (``extend``, adding instances) keeps them.

    Returns:
        {"admin_key": str, "admin_identity": str, "extra_config": tuple[(name, bytes)]}, the
        keyword arguments of :func:`annex_bundle`; empty strings and () for what the bundle
        lacks (one made before annexes had keys, or an unreadable one).
    """
    key, identity, extra = "", "", []
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            for member in tar.getmembers():
                stream = tar.extractfile(member) if member.isfile() else None
                if stream is None:
                    continue
                if member.name == annex_admin.key_member(annex_name):
                    key = stream.read(1024).decode("ascii", "replace").strip()
                elif member.name.startswith(USER_CONFIG_PREFIX):
                    extra.append((member.name[len(USER_CONFIG_PREFIX):], stream.read()))
                elif member.name == "config.d/50-annex.config":
                    m = re.search(r"^ALLOW_ADMINISTRATOR = (\S+)/\*, ",
                                  stream.read().decode("utf-8", "replace"), re.MULTILINE)
                    identity = m.group(1) if m and "@annex-" in m.group(1) else ""
    except (tarfile.TarError, OSError, EOFError):
        return {"admin_key": "", "admin_identity": "", "extra_config": ()}
    if not (key and identity):
        key = identity = ""
    return {"admin_key": key, "admin_identity": identity, "extra_config": tuple(sorted(extra))}


def base_paths(local_dir: str, etc_dir: str) -> str:
    """Path knobs for a node whose state lives in ``local_dir`` and config in ``etc_dir``
    (Debian's layout for binaries)."""
    return f"""\
RELEASE_DIR = /usr
BIN = /usr/bin
SBIN = /usr/sbin
LIB = /usr/lib/condor
LIBEXEC = /usr/libexec/condor
SHARE = /usr/share/condor
LOCAL_DIR = {local_dir}
ETC = {etc_dir}
LOG = $(LOCAL_DIR)/log
SPOOL = $(LOCAL_DIR)/spool
EXECUTE = $(LOCAL_DIR)/execute
RUN = $(LOCAL_DIR)/run
LOCK = $(LOCAL_DIR)/lock
CRED_STORE_DIR = $(LOCAL_DIR)/cred_dir
SEC_TOKEN_DIRECTORY = $(ETC)/tokens.d
SEC_TOKEN_SYSTEM_DIRECTORY = $(ETC)/tokens.d
SEC_PASSWORD_DIRECTORY = $(ETC)/passwords.d
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR = $(ETC)/config.d
"""


def pool_security(trust_domain: str, admins: tuple[str, ...] = ()) -> str:
    """The security lines of a pool that accepts annex nodes (central manager + submit node).

    IDTOKENS for daemons and annex nodes (annex identities are ``annex-<name>@annex``), FS for
    local users.  The collector is the annex nodes' CCB server: it grants DAEMON (what a CCB
    registration needs) to annex identities, in the collector only, so they gain no DAEMON
    rights at the schedd or negotiator; CCB connection requests from the schedd and tools need
    READ (``ALLOW_READ = *``).  HTCondor manual, *Authorization* and *Token Authentication*.

    Args:
        trust_domain: the pool's TRUST_DOMAIN (also its UID_DOMAIN and FILESYSTEM_DOMAIN).
        admins: local user names (FS authentication) that are the pool's administrators
            besides root and condor, e.g. the seed's admin user; they may also advertise to
            the collector (condor_annexd's ad).

    Returns:
        ``KEY = VALUE`` lines, newline-terminated.
    """
    extra = "".join(f", {u}@*/*" for u in admins)
    return f"""\
UID_DOMAIN = {trust_domain}
FILESYSTEM_DOMAIN = {trust_domain}
TRUST_DOMAIN = {trust_domain}
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS
SEC_READ_AUTHENTICATION = OPTIONAL
SEC_CLIENT_AUTHENTICATION = OPTIONAL
ALLOW_READ = *
ALLOW_WRITE = *@{trust_domain}/*, condor@*/*, root@*/*
ALLOW_DAEMON = condor@*/*, root@*/*
COLLECTOR.ALLOW_DAEMON = $(ALLOW_DAEMON), *@annex/*{extra}
ALLOW_ADMINISTRATOR = condor@*/*, root@*/*{extra}
ALLOW_NEGOTIATOR = condor@*/*, root@*/*
ALLOW_ADVERTISE_STARTD = *@annex/*, condor@*/*
ALLOW_ADVERTISE_MASTER = *@annex/*, condor@*/*
ALLOW_ADVERTISE_SCHEDD = condor@*/*, root@*/*
"""


def central_manager_config(*, local_dir: str, etc_dir: str, host: str, trust_domain: str) -> str:
    """``condor_config`` of the local cloud's central manager + submit node.

    Collector, negotiator and schedd in one master; security from :func:`pool_security`;
    short negotiation cycles so a demo's jobs start within seconds.
    """
    return base_paths(local_dir, etc_dir) + f"""\
CONDOR_HOST = {host}
COLLECTOR_HOST = {host}:9618
NETWORK_INTERFACE = {host}
DAEMON_LIST = MASTER COLLECTOR NEGOTIATOR SCHEDD
{pool_security(trust_domain)}NEGOTIATOR_INTERVAL = 5
NEGOTIATOR_MIN_INTERVAL = 1
SCHEDD_INTERVAL = 5
NEGOTIATOR_CYCLE_DELAY = 1
SHADOW_WORKLIFE = 0
MOUNT_UNDER_SCRATCH =
SYSTEM_JOB_MACHINE_ATTRS = $(SYSTEM_JOB_MACHINE_ATTRS) AnnexName EC2InstanceID
"""


def node_image_config(*, local_dir: str, etc_dir: str) -> str:
    """``condor_config`` baked into a local-cloud instance "image": paths only.  Everything that
    makes it an annex node comes from the bundle the agent installs into ``config.d``."""
    return base_paths(local_dir, etc_dir) + "DAEMON_LIST = MASTER\nMOUNT_UNDER_SCRATCH =\n"
