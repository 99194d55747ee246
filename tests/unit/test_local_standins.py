"""The local cloud's stand-ins for systemd and hardware (providers/local/standins/): run as the
instance runs them (``python3 <stand-in> ARGS``), against a scratch root (``STANDIN_ROOT``).

What a user of the local cloud would see: the bootstrap's ``systemctl mask``/``enable --now``
start the agent with the arguments its EnvironmentFile gives, split as systemd splits them;
``shutdown -h now`` powers the instance off (SIGTERM to its init)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condor_annex.providers.local import instance_init, instance_root

STANDINS = Path(instance_root.__file__).with_name("standins")

# A service that records its argv and environment: what systemd would have exec'd.
RECORDER = """import json, os, sys
with open(os.environ["OUT"], "w") as f:
    json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, f)
print("recorder ran", flush=True)
"""


def run(tool: str, root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STANDINS / tool), *args], capture_output=True,
                          text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "STANDIN_ROOT": str(root), **env})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/recorder.py").write_text(RECORDER)
    return tmp_path


def write_unit(root: Path, out: Path, exec_args: str) -> None:
    (root / "etc/systemd/system/agent.service").write_text(f"""\
[Unit]
Description=test agent
After=network-online.target

[Service]
Type=simple
Environment="OUT={out}" GREETING=hello
EnvironmentFile=-/etc/default/agent
ExecStart={sys.executable} {root}/usr/local/bin/recorder.py {exec_args}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
""")


def wait_for(path: Path, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"the service never ran ({path} missing)")


def test_enable_now_runs_execstart_with_environment_file_and_var_splitting(root, tmp_path):
    out = tmp_path / "ran.json"
    write_unit(root, out, '$ARGS "${ARGS}" --x=${GREETING} $$HOME $MISSING')
    (root / "etc/default/agent").write_text(
        '# comment\nARGS="--aws-endpoint-url http://10.200.0.1:4566  --lease-margin-s 60"\n'
        "GREETING='quoted value'\n")
    p = run("systemctl", root, "enable", "--now", "agent.service")
    assert p.returncode == 0, p.stderr
    seen = wait_for(out)
    # $ARGS as a word: split at whitespace; "${ARGS}": one word, exact; ${X} inside a word;
    # $$ is a literal $; an unset $VAR as a word vanishes (systemd.service(5)).
    assert seen["argv"] == ["--aws-endpoint-url", "http://10.200.0.1:4566", "--lease-margin-s",
                            "60", "--aws-endpoint-url http://10.200.0.1:4566  --lease-margin-s 60",
                            "--x=quoted value", "$HOME"]
    assert seen["env"]["GREETING"] == "quoted value"     # EnvironmentFile wins over Environment
    assert seen["env"]["PATH"].startswith("/usr/local/sbin")   # systemd's clean environment
    assert "STANDIN_ROOT" not in seen["env"]
    link = root / "etc/systemd/system/multi-user.target.wants/agent.service"
    assert link.is_symlink()
    deadline = time.monotonic() + 5
    while "recorder ran" not in (root / "dev/console").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "recorder ran" in (root / "dev/console").read_text()   # StandardOutput=...console


def test_missing_optional_environment_file_is_fine_required_one_is_not(root, tmp_path):
    out = tmp_path / "ran.json"
    write_unit(root, out, "$ARGS")
    assert run("systemctl", root, "start", "agent").returncode == 0
    assert wait_for(out)["argv"] == []
    unit = root / "etc/systemd/system/agent.service"
    unit.write_text(unit.read_text().replace("EnvironmentFile=-", "EnvironmentFile="))
    out.unlink()
    run("systemctl", root, "stop", "agent")
    p = run("systemctl", root, "start", "agent")
    assert p.returncode == 1 and "/etc/default/agent" in p.stderr


def test_mask_blocks_enable_and_start_until_unmask(root, tmp_path):
    out = tmp_path / "ran.json"
    write_unit(root, out, "")
    (root / "etc/systemd/system/agent.service").rename(root / "etc/systemd/system/x.service")
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/x.service").rename(root / "usr/lib/systemd/system/agent.service")
    assert run("systemctl", root, "mask", "agent.service").returncode == 0
    assert os.readlink(root / "etc/systemd/system/agent.service") == "/dev/null"
    p = run("systemctl", root, "enable", "--now", "agent.service")
    assert p.returncode == 1 and "masked" in p.stderr
    p = run("systemctl", root, "start", "agent")
    assert p.returncode == 1 and "masked" in p.stderr
    assert run("systemctl", root, "is-enabled", "agent").stdout.strip() == "masked"
    assert not out.exists()
    assert run("systemctl", root, "unmask", "agent").returncode == 0
    assert run("systemctl", root, "start", "agent").returncode == 0
    wait_for(out)


def test_is_active_stop_and_drop_in_execstart_override(root, tmp_path):
    out = tmp_path / "ran.json"
    (root / "etc/systemd/system/agent.service").write_text(f"""\
[Service]
ExecStart={sys.executable} -c "import time; time.sleep(60)"
""")
    dropin = root / "etc/systemd/system/agent.service.d"
    dropin.mkdir()
    (dropin / "50-override.conf").write_text(f"""\
[Service]
Environment=OUT={out}
ExecStart=
ExecStart={sys.executable} {root}/usr/local/bin/recorder.py --extra
""")
    assert run("systemctl", root, "is-active", "agent").returncode == 3
    assert run("systemctl", root, "start", "agent").returncode == 0
    assert wait_for(out)["argv"] == ["--extra"]   # the drop-in's ExecStart replaced the unit's
    # A long-running service: is-active until stop.
    (dropin / "50-override.conf").unlink()
    run("systemctl", root, "stop", "agent")
    assert run("systemctl", root, "start", "agent").returncode == 0
    p = run("systemctl", root, "is-active", "agent")
    assert (p.returncode, p.stdout.strip()) == (0, "active")
    assert run("systemctl", root, "stop", "agent").returncode == 0
    assert run("systemctl", root, "is-active", "agent").returncode == 3


def test_unsupported_command_is_one_line_exit_1(root):
    p = run("systemctl", root, "isolate", "rescue.target")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "not supported" in p.stderr


@pytest.mark.parametrize("argv", [("shutdown", "-h", "now"), ("shutdown", "-P", "now"),
                                  ("poweroff",), ("halt",)])
def test_shutdown_now_sends_sigterm_to_init(tmp_path, argv):
    # "init": a process that records the SIGTERM it gets.
    marker = tmp_path / "got-sigterm"
    init = subprocess.Popen([sys.executable, "-c", f"""
import signal, sys, time
def stop(*_):
    open({str(marker)!r}, "w").write("TERM"); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    assert init.stdout.readline().strip() == "ready"
    link = tmp_path / argv[0]
    if not link.exists():
        link.symlink_to(STANDINS / "shutdown")   # poweroff/halt: the same script, by name
    p = subprocess.run([sys.executable, str(link), *argv[1:]], capture_output=True, text=True,
                       env={"STANDIN_INIT_PID": str(init.pid), "STANDIN_ROOT": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert init.wait(timeout=10) == 0
    assert marker.read_text() == "TERM"


def test_reboot_is_refused_and_nothing_is_signalled(tmp_path):
    p = subprocess.run([sys.executable, str(STANDINS / "shutdown"), "-r", "now"],
                       capture_output=True, text=True,
                       env={"STANDIN_INIT_PID": "999999999", "STANDIN_ROOT": str(tmp_path)})
    assert p.returncode == 1 and "reboot is not supported" in p.stderr


def test_dmidecode_reports_an_ec2_identity(tmp_path):
    dmi = instance_root.ec2_dmi("i-0123456789abcdef0", "m5.large")
    (tmp_path / "run/local-cloud").mkdir(parents=True)
    (tmp_path / "run/local-cloud/dmi.json").write_text(json.dumps(dmi))
    uuid = run("dmidecode", tmp_path, "-s", "system-uuid").stdout.strip()
    assert uuid.startswith("ec2") and len(uuid) == 36     # what cloud-init's AWS check wants
    assert run("dmidecode", tmp_path, "--string", "system-manufacturer").stdout.strip() == \
        "Amazon EC2"
    assert run("dmidecode", tmp_path, "-s", "system-product-name").stdout.strip() == "m5.large"
    bad = run("dmidecode", tmp_path, "-s", "no-such-key")
    assert bad.returncode == 2 and "Invalid string keyword" in bad.stderr


def test_tmpfiles_creates_what_boot_would(tmp_path):
    (tmp_path / "usr/lib/tmpfiles.d").mkdir(parents=True)
    (tmp_path / "etc/tmpfiles.d").mkdir(parents=True)
    (tmp_path / "usr/lib/tmpfiles.d/condor-tmpfiles.conf").write_text(
        "# HTCondor needs directory in /run\nd /run/condor 0775 root root\n")
    (tmp_path / "usr/lib/tmpfiles.d/x.conf").write_text("d /run/overridden 0700 - -\n")
    (tmp_path / "etc/tmpfiles.d/x.conf").write_text("d /run/from-etc 0750 - -\n")
    assert instance_init.apply_tmpfiles(str(tmp_path)) == 2
    assert oct((tmp_path / "run/condor").stat().st_mode & 0o7777) == "0o775"
    assert (tmp_path / "run/from-etc").is_dir() and not (tmp_path / "run/overridden").exists()
    assert (tmp_path / "run/lock").stat().st_mode & 0o1777 == 0o1777


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a PID namespace (root)")
def test_init_powers_off_on_sigterm_stopping_its_processes(tmp_path):
    # The stand-in init as PID 1 of its own PID namespace (as in an instance): a stage that
    # never ends, then SIGTERM (what shutdown/poweroff and an EC2 stop send): it SIGTERMs every
    # process, says so on its console and exits 0; nothing of the namespace is left.
    started = tmp_path / "started"
    code = f"""
import sys
sys.path.insert(0, {str(Path(instance_init.__file__).parent)!r})
import instance_init as ii
ii.TMPFILES_ROOT = {str(tmp_path)!r}
ii.STAGES = (("sleeper", [sys.executable, "-c",
    "import time; open({str(started)!r},'w').write('x'); time.sleep(600)"]),)
sys.exit(ii.Init().run())
"""
    p = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", code],
                         stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    init_pid = int(Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()[0])
    os.kill(init_pid, signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    assert "local-init: booting" in out
    assert "local-init: powering off: stopping every process" in out
    assert out.rstrip().endswith("local-init: power off")


def test_init_drops_another_instances_cached_datasource_and_keeps_its_own(tmp_path):
    """Regression: an instance booted from an image made by ``image build`` restored the
    builder's cached datasource (cloud-init's network stage trusts the cache; its local stage,
    never run here, would have checked it), so its user data never ran and it never joined."""
    root = tmp_path
    (root / "run/local-cloud").mkdir(parents=True)
    (root / "var/lib/cloud/data").mkdir(parents=True)
    (root / "var/lib/cloud/instance").mkdir(parents=True)
    (root / "run/local-cloud/dmi.json").write_text(json.dumps(
        instance_root.ec2_dmi("i-new", "m4.large")))
    cache = root / "var/lib/cloud/instance/obj.pkl"
    (root / "var/lib/cloud/data/instance-id").write_text("i-new\n")
    cache.write_bytes(b"pickle")
    assert instance_init.drop_stale_datasource_cache(str(root)) == ""   # a reboot: kept
    assert cache.exists()
    (root / "var/lib/cloud/data/instance-id").write_text("i-builder\n")
    assert instance_init.drop_stale_datasource_cache(str(root)) == "i-builder"
    assert not cache.exists()


def test_init_removes_the_earlier_boots_status(tmp_path):
    """Regression: boots from a built image inherited the builder's status.json errors and
    cloud-init's final stage exited 1 although all of this boot's modules succeeded."""
    data = tmp_path / "var/lib/cloud/data"
    data.mkdir(parents=True)
    (data / "status.json").write_text('{"v1": {"modules-final": {"errors": ["x"]}}}')
    (data / "result.json").write_text("{}")
    (data / "instance-id").write_text("i-new\n")
    instance_init.reset_boot_status(str(tmp_path))
    assert sorted(p.name for p in data.iterdir()) == ["instance-id"]
    instance_init.reset_boot_status(str(tmp_path))   # nothing to remove: fine
