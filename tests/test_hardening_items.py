"""Items are walled off from each other (issue 15 items 1 and 2), seen from outside.

pyinit runs as PID 1 of a PID namespace with the fixture users: ``daemon``
(uid 1) runs the db sidecar, ``nobody`` attacks it, ``alice`` is the main.

1. A sidecar of another user finds db's notify socket in /proc/net/unix,
   tries to join db's process group and sends ``READY=1``: the setpgid fails
   (each item leads its own session) and the datagram does not count (its
   sender is neither db's user nor in db's session), so the main never starts.
2. A ``--file-env`` secret read for the main reaches no item, unless the item
   names it with ``file-env=``; --dry-run shows who gets which names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
from pathlib import Path

import pytest
from plan_helpers import plan_for
from sandbox import Sandbox, base_environment
from sandbox import run_pyinit as sandbox_run_pyinit

from pyinit.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyinit.plan.services import Item

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (users, PID namespaces)")

needs_systemd_notify = pytest.mark.skipif(
    shutil.which("systemd-notify") is None, reason="needs systemd-notify"
)

#: The attacker, run as nobody: find the victim's notify socket (its name has argv[1]) and
#: process (uid argv[2]), join its process group, say READY=1.
FORGE_READY = r"""
import errno, os, socket, sys, time

fragment, victim = sys.argv[1], int(sys.argv[2])


def notify_address():
    with open("/proc/net/unix") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7].startswith("@pyinit/"):
                if fragment in fields[7]:
                    return fields[7]
    return None


def process_of(uid):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/" + entry).st_uid == uid:
                    return int(entry)
            except OSError:
                pass
    return None


deadline = time.monotonic() + 10
address = db = None
while (address is None or db is None) and time.monotonic() < deadline:
    address = address or notify_address()
    db = db or process_of(victim)
    time.sleep(0.02)
with open(f"/proc/{db}/stat") as f:
    group = int(f.read().rpartition(")")[2].split()[2])
print(f"found pid {db} group {group}", flush=True)
if os.fork() == 0:  # a process that leads nothing may change its group
    try:
        os.setpgid(0, group)
        print("setpgid: joined", flush=True)
    except OSError as e:
        print("setpgid:", errno.errorcode[e.errno], flush=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for _ in range(10):
        try:
            sock.sendto(b"READY=1", "\0" + address[1:])
        except OSError:  # closed: pyinit took the word and stopped listening
            pass
        time.sleep(0.05)
    print("sent READY=1", flush=True)
    time.sleep(60)  # still alive when pyinit reads the datagrams
    os._exit(0)
time.sleep(60)
"""


def db_name() -> str:
    """A sidecar name no concurrent test uses (abstract sockets are per network namespace)."""
    return f"db{os.getpid()}"


def attacker(python: str, fragment: str, victim_uid: int) -> list[str]:
    """The --sidecar flag of a nobody sidecar that forges READY=1 (see FORGE_READY)."""
    command = shlex.join([python, "-c", FORGE_READY, fragment, str(victim_uid)])
    return ["--sidecar", f"evil user=nobody -- {command}"]


# --- 1. readiness cannot be forged by another item --------------------------------------


def test_another_user_cannot_join_a_sidecars_group_nor_declare_it_ready(
    sandbox: Sandbox, python_any_user: str
) -> None:
    name = db_name()
    code, out, err = sandbox.pyinit(
        *attacker(python_any_user, f"/sidecar-{name}/", 1),
        "--sidecar", f"{name} user=daemon ready=notify ready-timeout=6 -- sleep 60",
        "--user", "alice", "--", "sh", "-c", "echo main ran",
        pid_namespace=True, timeout=40,
    )  # fmt: skip
    assert "evil | setpgid: EPERM" in out.splitlines(), (out, err)
    assert "evil | sent READY=1" in out.splitlines(), (out, err)
    assert "main ran" not in out
    assert code == 125, (out, err)
    assert f"pyinit: sidecar {name} not ready within 6s (waiting for notify)" in err


def test_another_user_cannot_declare_the_main_ready_upward(
    sandbox: Sandbox, python_any_user: str, tmp_path: Path
) -> None:
    # Its own network namespace (unshare --net, pyinit still PID 1): the attacker
    # sees this pyinit's sockets only; the upward NOTIFY_SOCKET is a path, reachable.
    upward = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(upward))
        code, out, err = sandbox_run_pyinit(
            *attacker(python_any_user, "/main/", 1000),
            "--ready", "notify", "--user", "alice", "--", "sleep", "4",
            pid1=True, sandbox=sandbox, prefix=("unshare", "--net"), timeout=40,
            env=base_environment(NOTIFY_SOCKET=str(upward)),
        )  # fmt: skip
        sock.setblocking(False)
        said = []
        with contextlib.suppress(BlockingIOError):
            while True:
                said.append(sock.recv(4096))
    assert "evil | setpgid: EPERM" in out.splitlines(), (out, err)
    assert "evil | sent READY=1" in out.splitlines(), (out, err)
    assert code == 0, (out, err)
    assert b"READY=1" not in said, said
    assert b"STOPPING=1" in said


@needs_systemd_notify
def test_the_sidecars_own_child_still_declares_it_ready_beside_the_attacker(
    sandbox: Sandbox, python_any_user: str
) -> None:
    name = db_name()
    notifier = shlex.join(["sh", "-c", "sleep 1; systemd-notify --ready; exec sleep 60"])
    code, out, err = sandbox.pyinit(
        *attacker(python_any_user, f"/sidecar-{name}/", 1),
        "--sidecar", f"{name} user=daemon ready=notify ready-timeout=15 -- {notifier}",
        "--user", "alice", "--", "sh", "-c", "echo main ran as $(id -un)",
        pid_namespace=True, timeout=40,
    )  # fmt: skip
    assert code == 0, (out, err)
    assert "main ran as alice" in out.splitlines()


def test_each_item_leads_a_session_of_its_own(sandbox: Sandbox) -> None:
    show = "ps -o pid=,pgid=,sid=,user= -p $$"
    code, out, err = sandbox.pyinit(
        "--sidecar", f"a user=nobody -- sh -c '{show}; exec sleep 60'",
        "--task", f"b user=daemon -- sh -c '{show}'",
        "--", "sh", "-c", "sleep 0.5",
        pid_namespace=True,
    )  # fmt: skip
    assert code == 0, err
    rows = [line.split(" | ", 1)[1].split() for line in out.splitlines() if " | " in line]
    assert sorted(row[3] for row in rows) == ["daemon", "nobody"], out
    for pid, pgid, sid, _user in rows:
        assert pid == pgid == sid, out


def test_an_exec_probe_runs_its_own_command_as_its_item_with_its_environment(
    sandbox: Sandbox,
) -> None:
    # The probe is started from its item's launch record with the probe's command:
    # the item's user and HOME/USER/LOGNAME, not the main's.
    code, out, err = sandbox.pyinit(
        "--user", "alice",
        "--sidecar", "s user=daemon ready=exec:env ready-timeout=10 -- sleep 60",
        "--", "true",
        pid_namespace=True,
    )  # fmt: skip
    assert code == 0, err
    probe = set(out.splitlines())
    assert {"USER=daemon", "LOGNAME=daemon", "HOME=/usr/sbin"} <= probe, out


# --- 2. a secret read for the main reaches only who asks for it -------------------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-owned secret file in a root-owned directory: safe from every fixture user."""
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o755)
    path = directory / "dbpw"
    path.write_text("hunter2\n")
    path.chmod(0o644)
    return path


def env_lines(out: str, prefix: str) -> set[str]:
    return {line.removeprefix(prefix) for line in out.splitlines() if line.startswith(prefix)}


def test_a_secret_read_for_the_main_does_not_reach_another_users_task(
    sandbox: Sandbox, secret: Path
) -> None:
    code, out, err = sandbox.pyinit(
        "--file-env", "DBPW", "--user", "alice",
        "--task", "peek user=nobody -- env",
        "--", "env",
        pid_namespace=True, env=base_environment(DBPW_FILE=str(secret)),
    )  # fmt: skip
    assert code == 0, err
    assert "hunter2" not in "".join(line for line in out.splitlines() if line.startswith("peek"))
    peek = env_lines(out, "peek | ")
    assert not any(line.startswith(("DBPW=", "DBPW_FILE=")) for line in peek), peek
    assert "USER=nobody" in peek
    assert "DBPW=hunter2" in out.splitlines()  # the main's


def test_an_item_gets_the_secrets_it_names_and_no_others(sandbox: Sandbox, secret: Path) -> None:
    other = secret.parent / "api"
    other.write_text("s3cr3t\n")
    code, out, err = sandbox.pyinit(
        "--file-env", "DBPW", "--user", "alice",
        "--task", "migrate user=daemon file-env=DBPW -- env",
        "--task", "ship user=nobody file-env=API -- env",
        "--", "env",
        pid_namespace=True, env=base_environment(DBPW_FILE=str(secret), API_FILE=str(other)),
    )  # fmt: skip
    assert code == 0, err
    migrate, ship = env_lines(out, "migrate | "), env_lines(out, "ship | ")
    main = {line for line in out.splitlines() if " | " not in line}
    assert "DBPW=hunter2" in migrate and not any(v.startswith("API") for v in migrate)
    assert "API=s3cr3t" in ship and not any(v.startswith("DBPW") for v in ship)
    assert "DBPW=hunter2" in main and not any(v.startswith("API") for v in main)
    for lines in (migrate, ship, main):
        assert not any("_FILE=" in line for line in lines)


def test_an_items_secret_path_must_be_safe_from_that_items_user(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    directory = tmp_path / "nobodys"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    (directory / "dbpw").write_text("hunter2\n")
    code, out, err = sandbox.pyinit(
        "--task", "peek user=nobody file-env=DBPW -- env",
        "--", "true",
        pid_namespace=True, env=base_environment(DBPW_FILE=str(directory / "dbpw")),
    )  # fmt: skip
    assert code == 125, (out, err)
    assert "hunter2" not in out + err
    assert err.startswith(
        f"pyinit: --task 'peek user=nobody file-env=DBPW -- env': file-env=DBPW: "
        f"DBPW_FILE={directory}/dbpw: {directory} is a directory owned by uid 65534, not root"
    ), err
    assert len(err.splitlines()) == 1


def test_dry_run_says_who_receives_which_secret_names_never_the_values(
    sandbox: Sandbox, secret: Path
) -> None:
    args = (
        "--dry-run", "--file-env", "DBPW", "--user", "alice",
        "--task", "peek user=nobody -- env",
        "--sidecar", "db user=daemon file-env=DBPW -- sleep 60",
        "--", "env",
    )  # fmt: skip
    env = base_environment(DBPW_FILE=str(secret))
    code, out, err = sandbox.pyinit(*args, env=env)
    assert code == 0, err
    assert "hunter2" not in out + err
    block = out.split("secrets read from NAME_FILE", 1)[1].splitlines()[1:4]
    assert block == ["  main: DBPW", "  task peek: none", "  sidecar db: DBPW"]
    code, out, err = sandbox.pyinit("--json", *args, env=env)
    assert code == 0, err
    assert "hunter2" not in out + err
    assert json.loads(out)["secrets"] == {"main": ["DBPW"], "task peek": [], "sidecar db": ["DBPW"]}


# --- planning, in process -----------------------------------------------------------------


def launch_env(item: Item) -> Mapping[str, str]:
    """The environment an item is exec'd with, from the launch record the plan made."""
    assert item.launch is not None
    return item.launch.env


def test_item_launch_drops_the_mains_secrets_and_adds_the_items_own(secret: Path) -> None:
    environ = {"PATH": "/bin", "DBPW_FILE": str(secret), "PLAIN": "x"}
    plan = plan_for(
        ["--file-env", "DBPW", "--task", "a -- true", "--task", "b file-env=DBPW -- true",
         "--", "true"],
        environ,
    )  # fmt: skip
    a, b = plan.items
    assert plan.env["DBPW"] == "hunter2" and "DBPW_FILE" not in plan.env
    assert "DBPW" not in launch_env(a)
    assert launch_env(a)["PLAIN"] == "x"
    assert launch_env(b)["DBPW"] == "hunter2"
    assert b.file_env == ("DBPW",)


def test_an_item_only_secret_reaches_neither_the_main_nor_its_file_variable(
    secret: Path,
) -> None:
    plan = plan_for(
        ["--task", "a file-env=DBPW,DBPW -- true", "--", "true"],
        {"PATH": "/bin", "DBPW_FILE": str(secret)},
    )
    assert "DBPW" not in plan.env and "DBPW_FILE" not in plan.env
    assert plan.items[0].file_env == ("DBPW",)
    assert launch_env(plan.items[0])["DBPW"] == "hunter2"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("a file-env= -- true", "file-env='': expected file-env=NAME[,NAME...]"),
        ("a file-env=1X -- true", "file-env='1X': '1X' is not a valid environment variable name"),
        ("a env=DBPW=x file-env=DBPW -- true", "env=DBPW=... and file-env=DBPW: one variable"),
    ],
)
def test_bad_file_env_keys_are_refused_naming_the_item(item: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        plan_for(["--task", item, "--", "true"], {"PATH": "/bin"})
    assert caught.value.message.startswith(f"--task {item!r}: {message}")


def test_a_config_files_start_table_names_its_secrets(tmp_path: Path, secret: Path) -> None:
    config = tmp_path / "pyinit.toml"
    config.write_text(
        '[[start]]\ntask = "a"\ncommand = ["true"]\nfile-env = ["DBPW", "API"]\n\n'
        '[[start]]\ntask = "b"\ncommand = ["true"]\nfile-env = "DBPW"\n'
    )
    plan = plan_for(["--config", str(config), "--", "true"], {"DBPW_FILE": str(secret)})
    assert [item.file_env for item in plan.items] == [("DBPW", "API"), ("DBPW",)]
    assert "DBPW" not in plan.env
    assert launch_env(plan.items[1])["DBPW"] == "hunter2"
