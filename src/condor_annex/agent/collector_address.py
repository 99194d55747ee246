"""The pool's collector address, as the installed HTCondor configuration gives it.

The annex's bundle writes ``COLLECTOR_HOST`` into ``config.d/50-annex.config``
(``condor_annex.pool.configs.annex_config``): ``host``, ``host:port``, or a sinful string
``<host:port?params>``; users' own pools also write shared-port addresses such as
``host:9618?sock=collector`` and lists of collectors (HTCondor's high availability).  The agent
reads it back from the files HTCondor itself reads (``condor_config``, then
``config.d/*`` in name order, the last definition winning), so that it checks the address the
startd will use, not one it was told separately.

This is a reader for the plain ``NAME = value`` lines condor_annex writes, not HTCondor's whole
configuration language: ``$(NAME)`` and ``$(NAME:default)`` are expanded from the same files;
``if``/``include``/``use`` lines and subsystem-prefixed names (``STARTD.X``) are skipped;
``$ENV()`` and other functions make the address unknown (:class:`UnknownAddress`).  HTCondor
manual, *Introduction to Configuration* (syntax, macro expansion, ``LOCAL_CONFIG_DIR`` order and
``LOCAL_CONFIG_DIR_EXCLUDE_REGEXP``) and *Configuration Macros* (``COLLECTOR_HOST``, whose default
is ``$(CONDOR_HOST)``; the collector's default port 9618).

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import re
from pathlib import Path

#: The collector's port when the address names none (HTCondor's ``COLLECTOR_PORT`` default).
DEFAULT_PORT = 9618
#: Files of ``config.d`` HTCondor skips by default (``LOCAL_CONFIG_DIR_EXCLUDE_REGEXP``).
_EXCLUDED = re.compile(r"^((\..*)|(.*~)|(#.*)|(.*\.rpmsave)|(.*\.rpmnew)|(.*\.dpkg-.*))$")
#: ``NAME = value`` (no subsystem prefix; ``if``/``use``/``include`` lines do not match).
_ASSIGNMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)
#: ``$(NAME)`` or ``$(NAME:default)``.
_MACRO = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)(?::([^()]*))?\)")
#: Deepest macro nesting expanded (HTCondor allows more; ours are one level deep).
_MAX_DEPTH = 8


class UnknownAddress(ValueError):
    """The configuration's collector address cannot be read (the message says why)."""


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of one HTCondor address.

    Accepts ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, each with or without a
    shared-port suffix (``?sock=collector``) or sinful brackets (``<...>``); the port defaults
    to :data:`DEFAULT_PORT` (only host and port matter for reaching the collector).

    Raises:
        UnknownAddress: no host, or a port that is not a number from 1 to 65535.
    """
    text = address.strip().strip("<>").split("?", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:   # a host without a port, or a bare IPv6 address
        host, port_text = text, ""
    if not port_text:
        port = DEFAULT_PORT
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise UnknownAddress(f"collector address {address!r} has no valid port")
    if not host:
        raise UnknownAddress(f"collector address {address!r} has no host")
    return host, port


def shown(host: str, port: int) -> str:
    """``host:port`` (``[v6]:port`` for an IPv6 address), as the agent's lines show it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config_files(config_dir: Path) -> list[Path]:
    """The files HTCondor reads, in its order: ``condor_config``, then ``config.d/*`` sorted
    by name, without the ones it excludes by default (hidden, backups, package leftovers)."""
    files = [config_dir / "condor_config"]
    local = config_dir / "config.d"
    if local.is_dir():
        files += sorted(p for p in local.iterdir()
                        if p.is_file() and not _EXCLUDED.match(p.name))
    return [p for p in files if p.is_file()]


def read_knobs(files: list[Path]) -> dict[str, str]:
    """``NAME = value`` definitions of ``files``, in order, the last one winning; names upper
    case, values unexpanded.  Continuation lines (a trailing ``\\``) are joined; comments and
    unreadable files are skipped."""
    knobs: dict[str, str] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        text = re.sub(r"\\\n", "", text)
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            m = _ASSIGNMENT.fullmatch(line)
            if m:
                knobs[m.group(1).upper()] = m.group(2)
    return knobs


def expand(value: str, knobs: dict[str, str], depth: int = 0) -> str:
    """``value`` with ``$(NAME)`` / ``$(NAME:default)`` replaced from ``knobs`` (an undefined
    name without a default expands to "", as in HTCondor).

    Raises:
        UnknownAddress: nesting deeper than a few levels (a loop), or ``$`` forms other than
            a macro (``$ENV()``, ``$RANDOM_CHOICE()``, ...).
    """
    if depth > _MAX_DEPTH:
        raise UnknownAddress(f"macros nest too deep (a loop?) in {value!r}")

    def one(m: re.Match) -> str:
        name, default = m.group(1).upper(), m.group(2)
        if name in knobs:
            return expand(knobs[name], knobs, depth + 1)
        return expand(default, knobs, depth + 1) if default is not None else ""

    out = _MACRO.sub(one, value)
    if "$" in out:
        raise UnknownAddress(f"cannot evaluate {value!r} without HTCondor")
    return out


def collector_addresses(config_dir: Path) -> list[tuple[str, int]]:
    """(host, port) of each collector the installed configuration names, in its order.

    ``COLLECTOR_HOST`` (default ``$(CONDOR_HOST)``) may list several collectors, separated by
    commas or spaces.

    Raises:
        UnknownAddress: neither knob is set, or the value cannot be read (the message says why).
    """
    knobs = read_knobs(config_files(config_dir))
    raw = knobs.get("COLLECTOR_HOST", "$(CONDOR_HOST)")
    value = expand(raw, knobs)
    parts = [p for p in re.split(r"[,\s]+", value) if p]
    if not parts:
        raise UnknownAddress(f"no COLLECTOR_HOST (nor CONDOR_HOST) in {config_dir}/condor_config "
                             "or config.d")
    return [parse_address(p) for p in parts]
