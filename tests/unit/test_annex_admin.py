"""The annex's administrator credential (issue 13 item 3): its own signing key in the bundle,
the node configuration that trusts it, and the owner's token (pool/annex_admin.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from condor_annex.errors import BadInputError
from condor_annex.pool import annex_admin, configs

#: The local cloud's chroot with Debian's HTCondor, when this machine has it.
CHROOT = Path(os.environ.get("CONDOR_ANNEX_ROOT", "/var/lib/condor-annex/root"))
HAS_HTCONDOR = (CHROOT / "usr/bin/condor_token_create").exists() and os.geteuid() == 0
needs_htcondor = pytest.mark.skipif(not HAS_HTCONDOR, reason="needs root and the local "
                                    "cloud's chroot with HTCondor (make demo builds it)")


def _claims(token: str) -> tuple[dict, dict]:
    head, body, _sig = token.split(".")
    return tuple(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                 for p in (head, body))


def _members(bundle: bytes) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers()}


def _bundle(**kw) -> bytes:
    args = dict(annex_name="demo", collector="cm.example.org:9618",
                trust_domain="example.org", idle_seconds=900, token="eyJh.eyJi.c2ln")
    args.update(kw)
    return configs.annex_bundle(**args)


# --- the key and the token -------------------------------------------------------------------

def test_each_annex_key_is_new_random_and_printable():
    keys = {annex_admin.new_signing_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) >= 64 and key.isascii() and key.isprintable()
        assert len(base64.urlsafe_b64decode(key + "==")) >= 32


def test_the_token_names_the_annex_key_the_trust_domain_and_admin_scopes():
    key = annex_admin.new_signing_key()
    token = annex_admin.mint_admin_token(key, "demo", "alice@annex-demo", "example.org",
                                         now=1_800_000_000)
    header, claims = _claims(token)
    assert header == {"alg": "HS256", "kid": "annex-demo"}
    assert claims["iss"] == "example.org" and claims["sub"] == "alice@annex-demo"
    assert claims["iat"] == 1_800_000_000 and "exp" not in claims
    assert claims["scope"].split() == ["condor:/READ", "condor:/WRITE",
                                       "condor:/ADMINISTRATOR", "condor:/CONFIG"]
    assert key not in token
    other = annex_admin.mint_admin_token(annex_admin.new_signing_key(), "demo",
                                         "alice@annex-demo", "example.org", now=1_800_000_000)
    assert token.split(".")[2] != other.split(".")[2]


def test_a_malformed_key_is_refused_without_showing_it():
    with pytest.raises(BadInputError) as e:
        annex_admin.mint_admin_token("short\nkey", "demo", "a@annex-demo", "example.org")
    assert "short" not in str(e.value)


@needs_htcondor
def test_the_signature_is_what_condor_token_create_computes_for_the_same_key(tmp_path):
    """HTCondor's own tool signs a token with the annex key in a private key directory (passed
    by configuration, never in argv); our signature over its header and payload is equal."""
    rel = f"tmp/annex-admin-test-{os.getpid()}"
    keydir = CHROOT / rel
    keydir.mkdir(mode=0o700, parents=True)
    try:
        key = annex_admin.new_signing_key()
        path = keydir / "annex-demo"
        path.write_text(key)
        path.chmod(0o600)
        p = subprocess.run(
            ["chroot", str(CHROOT), "env", f"_CONDOR_SEC_PASSWORD_DIRECTORY=/{rel}",
             "_CONDOR_TRUST_DOMAIN=example.org", "CONDOR_CONFIG=/dev/null",
             "condor_token_create", "-identity", "alice@annex-demo", "-key", "annex-demo",
             "-authz", "ADMINISTRATOR"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        head, body, sig = p.stdout.strip().split(".")
        assert annex_admin.sign(key, f"{head}.{body}") == sig
        assert _claims(p.stdout.strip())[0]["kid"] == "annex-demo"
    finally:
        shutil.rmtree(keydir)


# --- the bundle ------------------------------------------------------------------------------

def test_the_bundle_carries_the_key_private_and_the_config_trusts_the_owner():
    key = annex_admin.new_signing_key()
    files = _members(_bundle(admin_key=key, admin_identity="alice@annex-demo"))
    assert files["passwords.d/annex-demo"] == (key.encode(), 0o600)
    cfg = files["config.d/50-annex.config"][0].decode().splitlines()
    assert "ALLOW_ADMINISTRATOR = alice@annex-demo/*, condor@example.org/*, " \
           "root@example.org/*" in cfg
    assert "ALLOW_CONFIG = $(ALLOW_ADMINISTRATOR)" in cfg
    assert "ENABLE_RUNTIME_CONFIG = True" in cfg and "SETTABLE_ATTRS_CONFIG = *" in cfg
    # Never the pool's key: the only key file is the annex's own.
    assert [n for n in files if n.startswith("passwords.d/")] == ["passwords.d/annex-demo"]


def test_without_a_key_nobody_is_granted_administration():
    files = _members(_bundle())
    cfg = files["config.d/50-annex.config"][0].decode()
    assert not [n for n in files if n.startswith("passwords.d/")]
    assert "ALLOW_ADMINISTRATOR = condor@example.org/*, root@example.org/*\n" in cfg
    assert "ENABLE_RUNTIME_CONFIG" not in cfg


@pytest.mark.parametrize("identity", ["alice@x/*, *@*", "alice", "a b@annex-demo",
                                      "alice@annex-demo\nSTART = TRUE"])
def test_an_identity_that_would_widen_the_grant_is_refused(identity):
    with pytest.raises(BadInputError, match="annex administrator"):
        _bundle(admin_key=annex_admin.new_signing_key(), admin_identity=identity)


def test_config_dir_files_come_after_ours_in_their_own_order_before_the_drain_file():
    extra = (("00-site.config", b"START = FALSE\n"), ("zz.config", b"X = 1\n"))
    files = _members(_bundle(admin_key=annex_admin.new_signing_key(),
                             admin_identity="alice@annex-demo", extra_config=extra))
    config_d = sorted(n for n in files if n.startswith("config.d/"))
    # HTCondor reads LOCAL_CONFIG_DIR in name order: the agent's 49-instance.config, ours,
    # the user's (theirs win over ours), then the agent's 90-annex-interruption.config.
    order = sorted(config_d + ["config.d/49-instance.config",
                               "config.d/90-annex-interruption.config"])
    assert order == ["config.d/49-instance.config", "config.d/50-annex.config",
                     "config.d/60-user-00-site.config", "config.d/60-user-zz.config",
                     "config.d/90-annex-interruption.config"]
    assert files["config.d/60-user-00-site.config"] == (b"START = FALSE\n", 0o644)


def test_extras_read_back_from_a_bundle_keep_key_identity_and_files():
    key = annex_admin.new_signing_key()
    extra = (("a.config", b"A = 1\n"),)
    got = configs.bundle_extras(_bundle(admin_key=key, admin_identity="bob@annex-demo",
                                        extra_config=extra), "demo")
    assert got == {"admin_key": key, "admin_identity": "bob@annex-demo", "extra_config": extra}
    # A bundle from before annex keys, or not a bundle at all: nothing to keep.
    assert configs.bundle_extras(_bundle(), "demo") == {
        "admin_key": "", "admin_identity": "", "extra_config": ()}
    assert configs.bundle_extras(b"not a tarball", "demo")["admin_key"] == ""


@needs_htcondor
def test_htcondor_reads_the_rendered_node_config_as_meant(tmp_path):
    """condor_config_val over the bundle's config.d: our knobs, then the user's override."""
    rel = f"tmp/annex-admin-cfg-{os.getpid()}"
    etc = CHROOT / rel
    (etc / "config.d").mkdir(parents=True)
    try:
        files = _members(_bundle(admin_key=annex_admin.new_signing_key(),
                                 admin_identity="alice@annex-demo",
                                 extra_config=(("site.config", b"UPDATE_INTERVAL = 7\n"),)))
        for name, (data, _mode) in files.items():
            if name.startswith("config.d/"):
                (etc / name).write_bytes(data)
        (etc / "condor_config").write_text(f"LOCAL_CONFIG_DIR = /{rel}/config.d\n"
                                           "LOCAL_CONFIG_FILE =\n")
        p = subprocess.run(["chroot", str(CHROOT), "env", f"CONDOR_CONFIG=/{rel}/condor_config",
                            "condor_config_val", "ALLOW_CONFIG", "ENABLE_RUNTIME_CONFIG",
                            "SETTABLE_ATTRS_CONFIG", "UPDATE_INTERVAL"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split("\n")[:4] == [
            "alice@annex-demo/*, condor@example.org/*, root@example.org/*", "True", "*", "7"]
    finally:
        shutil.rmtree(etc)


# --- the owner's token file ------------------------------------------------------------------

def test_the_token_directory_follows_htcondor(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert annex_admin.token_directory({}) == tmp_path / ".condor/tokens.d"
    assert annex_admin.token_directory({"SEC_TOKEN_DIRECTORY": "/srv/t"}) == Path("/srv/t")
    assert annex_admin.token_directory({"SEC_TOKEN_DIRECTORY": "/srv/t",
                                        "ANNEX_TOKEN_DIRECTORY": "~/x"}) == tmp_path / "x"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert annex_admin.token_directory({}) == Path("/etc/condor/tokens.d")
    assert annex_admin.token_directory({"SEC_TOKEN_SYSTEM_DIRECTORY": "/var/t"}) == \
        Path("/var/t")


@pytest.mark.parametrize("value", ["relative/dir", "$(ETC)/tokens.d"])
def test_a_token_directory_knob_that_is_no_absolute_path_is_refused(value):
    with pytest.raises(BadInputError, match="^ANNEX_TOKEN_DIRECTORY: "):
        annex_admin.token_directory({"ANNEX_TOKEN_DIRECTORY": value})


def test_the_token_is_written_private_replaced_and_removed(tmp_path):
    knobs = {"ANNEX_TOKEN_DIRECTORY": str(tmp_path / "new" / "tokens.d")}
    path = annex_admin.write_admin_token("demo", "eyJ.first.sig", knobs)
    assert path == tmp_path / "new/tokens.d/condor-annex-demo"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    annex_admin.write_admin_token("demo", "eyJ.second.sig", knobs)
    assert path.read_text() == "eyJ.second.sig\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["condor-annex-demo"]
    assert annex_admin.remove_admin_token("demo", knobs) is True
    assert not path.exists()
    assert annex_admin.remove_admin_token("demo", knobs) is False


def test_removing_never_raises(tmp_path, caplog):
    assert annex_admin.remove_admin_token("demo", {"ANNEX_TOKEN_DIRECTORY": "rel"}) is False
    assert "could not remove" in caplog.text


def test_the_agent_installs_every_file_key_private_user_files_readable(tmp_path):
    """agent/bundle.py installs each member of the bundle: ours and the user's config files
    (644) into config.d, the annex key (600) into passwords.d (700), as HTCondor reads them."""
    from condor_annex.agent.bundle import install_bundle
    etc = tmp_path / "etc"
    (etc / "config.d").mkdir(parents=True)
    key = annex_admin.new_signing_key()
    installed = dict(install_bundle(_bundle(
        admin_key=key, admin_identity="alice@annex-demo",
        extra_config=(("a.config", b"A = 1\n"), ("b.config", b"B = 2\n"))), etc))
    assert installed == {"config.d/50-annex.config": 0o644, "config.d/60-user-a.config": 0o644,
                         "config.d/60-user-b.config": 0o644, "passwords.d/annex-demo": 0o600,
                         "tokens.d/annex.token": 0o600}
    assert (etc / "passwords.d/annex-demo").read_text() == key
    assert oct((etc / "passwords.d").stat().st_mode & 0o777) == "0o700"
    assert oct((etc / "passwords.d/annex-demo").stat().st_mode & 0o777) == "0o600"
    assert (etc / "config.d/60-user-b.config").read_text() == "B = 2\n"
