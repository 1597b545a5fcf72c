"""Issue 15, the config file attacked from outside: each test failed on the code before the fix.

3. a config file (or a directory on its path) the service user or an item's user
   can write or swap is refused, before its ``pre`` hooks run as root;
4. a TOML integer mode means its value (``umask = 0o077`` is umask 077);
5. a NUL in any config string is refused by the plan, before ``mkdir`` ran;
6. deep nesting is one line, not a RecursionError;
7. ``--config`` naming a FIFO (or a device, or a huge file) is refused at once;
8. untrusted text (an item name with a newline, ESC, 10 kB) stays one short line;
12. ``--config`` is repeatable, takes a directory, and merges in order.

Runs pyinit as PID 1 in the fixture sandbox (alice is uid 1000) wherever a
process or a file is what the user sees; the rest is planned in-process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from plan_helpers import plan_for
from sandbox import Result, Sandbox, base_environment, run_pyinit, scratch_dir

from pyinit.errors import UsageError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

ALICE = 1000
TIMEOUT = 30


@pytest.fixture
def confdir() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp (root-owned, sticky): a safe place for configs."""
    with scratch_dir("pyinit-config-") as path:
        yield path


def write(path: Path, text: str, owner: int = 0, mode: int = 0o644) -> Path:
    """Write a config file as the given owner and mode (root-owned 0644 by default)."""
    path.write_text(text)
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


def hook_config(marker: Path, extra: str = "") -> str:
    """A config whose pre hook leaves MARKER behind with the uid it ran as."""
    return f'pre = ["id -u > {marker}"]\ncommand = ["true"]\n{extra}'


def error_of(argv: list[str], environ: dict[str, str] | None = None) -> str:
    """The one-line message planning ``argv`` is refused with."""
    with pytest.raises(UsageError) as info:
        plan_for(argv, environ)
    return info.value.message


def one_line_125(result: Result) -> str:
    """Assert the run was refused with exactly one ``pyinit:`` line and 125; return the line."""
    assert (result.returncode, result.stdout) == (125, ""), result
    assert result.stderr.startswith("pyinit: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


# --- 3. a config file the service user could write is not obeyed as root --------------------


def test_config_owned_by_the_service_user_is_refused_before_its_hooks(
    sandbox: Sandbox, confdir: Path
) -> None:
    marker = confdir / "marker"
    config = write(confdir / "pyinit.toml", hook_config(marker, 'user = "alice"\n'), ALICE)
    line = one_line_125(sandbox.pyinit("--config", str(config), pid_namespace=True))
    assert f"{config} is owned by uid {ALICE}; refusing to obey as root a config file" in line
    assert not marker.exists()
    # The same file, root's again, is obeyed: its hook ran as root.
    os.chown(config, 0, 0)
    result = sandbox.pyinit("--config", str(config), pid_namespace=True)
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "0\n"


@pytest.mark.parametrize("how", ["group-writable", "world-writable"])
def test_config_writable_by_the_service_user_is_refused(
    sandbox: Sandbox, confdir: Path, how: str
) -> None:
    marker = confdir / "marker"
    config = write(confdir / "pyinit.toml", hook_config(marker), 0, 0o644)
    if how == "group-writable":
        os.chown(config, 0, 50)  # staff: alice is a member
        config.chmod(0o664)
    else:
        config.chmod(0o666)
    line = one_line_125(
        sandbox.pyinit("--user", "alice", "--config", str(config), pid_namespace=True)
    )
    assert f"{config} is a file uid {ALICE} can write" in line
    assert not marker.exists()


def test_config_in_a_directory_the_service_user_owns_is_refused(
    sandbox: Sandbox, confdir: Path
) -> None:
    # alice cannot write the file, but can rename it away and put her own in its place.
    marker = confdir / "marker"
    volume = confdir / "volume"
    volume.mkdir()
    os.chown(volume, ALICE, ALICE)
    config = write(volume / "pyinit.toml", hook_config(marker, 'user = "alice"\n'))
    line = one_line_125(sandbox.pyinit("--config", str(config), pid_namespace=True))
    assert f"{volume} is a directory owned by uid {ALICE}, not root" in line
    assert not marker.exists()


def test_config_reached_through_a_symlink_the_user_owns_is_refused(
    sandbox: Sandbox, confdir: Path
) -> None:
    marker = confdir / "marker"
    real = write(confdir / "real.toml", hook_config(marker))
    link = confdir / "pyinit.toml"
    link.symlink_to(real)
    os.lchown(link, ALICE, ALICE)
    line = one_line_125(
        sandbox.pyinit("--user", "alice", "--config", str(link), pid_namespace=True)
    )
    assert f"{link} is a symbolic link owned by uid {ALICE}, not root" in line
    assert not marker.exists()


def test_an_items_user_counts_too(sandbox: Sandbox, confdir: Path) -> None:
    # The main stays root; a sidecar runs as alice, who owns the file.
    marker = confdir / "marker"
    item = '[[start]]\nsidecar = "web"\nuser = "alice"\ncommand = ["sleep", "1"]\n'
    config = write(confdir / "pyinit.toml", hook_config(marker, item), ALICE)
    line = one_line_125(sandbox.pyinit("--config", str(config), pid_namespace=True))
    assert f"uid {ALICE} could rewrite" in line
    assert not marker.exists()


def test_a_file_the_user_owns_in_a_sticky_directory_is_refused(confdir: Path) -> None:
    sticky = confdir / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    mine = write(sticky / "mine.toml", 'command = ["x"]\n', ALICE, 0o444)
    message = error_of(["--user", "1000", "--config", str(mine)])
    assert f"{mine} belongs to uid {ALICE} in the sticky directory" in message
    # root's file there cannot be replaced by alice: it is obeyed.
    roots = write(sticky / "root.toml", 'command = ["x"]\n')
    assert plan_for(["--user", "1000", "--config", str(roots)]).config_files == (str(roots),)


def test_a_config_directory_the_user_could_add_files_to_is_refused(confdir: Path) -> None:
    conf_d = confdir / "conf.d"
    conf_d.mkdir()
    conf_d.chmod(0o1777)  # sticky does not stop alice from adding her own 99-mine.toml
    write(conf_d / "10-app.toml", 'command = ["x"]\n')
    message = error_of(["--user", "1000:1000", "--config", str(conf_d)])
    assert f"{conf_d} is a directory uid {ALICE} can add files to" in message


def test_kubernetes_configmap_layout_is_obeyed(confdir: Path) -> None:
    # pyinit.toml -> ..data/pyinit.toml, ..data -> ..2024_..., all root's (a ConfigMap volume).
    volume = confdir / "config"
    volume.mkdir()
    stamp = volume / "..2024_05_01_12_00_00.123456789"
    stamp.mkdir()
    write(stamp / "pyinit.toml", 'user = "1000"\ncommand = ["x"]\n')
    (volume / "..data").symlink_to(stamp.name)
    (volume / "pyinit.toml").symlink_to("..data/pyinit.toml")
    plan = plan_for(["--config", str(volume / "pyinit.toml")])
    assert plan.identity is not None and plan.identity.uid == ALICE
    # The volume as a directory: its hidden ..data entries are not read twice.
    plan = plan_for(["--config", str(volume)])
    assert plan.config_files == (f"{volume}/pyinit.toml",)


def test_no_step_down_means_nothing_to_guard(confdir: Path) -> None:
    config = write(confdir / "pyinit.toml", 'command = ["x"]\n', ALICE)
    assert plan_for(["--config", str(config)]).command == ("x",)


def test_dry_run_refuses_what_the_run_refuses(confdir: Path) -> None:
    config = write(confdir / "pyinit.toml", 'user = "nobody"\ncommand = ["x"]\n', 65534)
    result = run_pyinit("--dry-run", "--config", str(config), env=base_environment())
    assert "is owned by uid 65534" in one_line_125(result)


# --- 4. integer modes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"), [("0o077", "0077"), ('"077"', "0077"), ("5", "0005"), ("0o27", "0027")]
)
def test_an_integer_umask_means_its_value(confdir: Path, value: str, shown: str) -> None:
    config = write(confdir / "pyinit.toml", f"umask = {value}\n")
    result = run_pyinit("--config", str(config), "--", "sh", "-c", "umask", env=base_environment())
    assert (result.returncode, result.stdout) == (0, shown + "\n"), result.stderr


@pytest.mark.parametrize(("value", "hint"), [("77", '0o077 or "077"'), ("18", "0o22 (the value")])
def test_a_decimal_integer_mode_is_refused_with_a_hint(
    confdir: Path, value: str, hint: str
) -> None:
    config = write(confdir / "pyinit.toml", f"umask = {value}\n")
    result = run_pyinit("--config", str(config), "--", "true", env=base_environment())
    line = one_line_125(result)
    assert f"key 'umask': {value} is a decimal integer" in line
    assert f"write umask = {hint}" in line


def test_a_huge_decimal_integer_mode_is_one_short_line(confdir: Path) -> None:
    """Found by the property test: the hint echoed a 4000-digit number (twice, and in octal)."""
    config = write(confdir / "pyinit.toml", f"umask = {'9' * 4000}\n")
    result = run_pyinit("--config", str(config), "--", "true", env=base_environment())
    line = one_line_125(result)
    assert line.rstrip("\n").endswith("key 'umask': out of range for a mode (at most 0o777)"), line
    assert len(line) < 300


# --- 5. NUL bytes ------------------------------------------------------------------------------

NUL = "\\u0000"


@pytest.mark.parametrize(
    "text",
    [
        f'command = ["app{NUL}"]\n',
        f'workdir = "/srv{NUL}"\n',
        f'pre = ["echo {NUL}"]\n',
        f'mkdir = ["/tmp/a{NUL}b"]\n',
        f'ready = "exec:true{NUL}"\n',
        f'[[start]]\ntask = "t"\ncommand = ["x{NUL}"]\n',
        f'[[start]]\nsidecar = "s"\ncommand = ["x"]\nready = "exec:true {NUL}"\n',
        f'[[start]]\nsidecar = "s"\ncommand = ["x"]\nenv = {{ "A{NUL}" = "1" }}\n',
        f'[[start]]\nsidecar = "s"\ncommand = ["x"]\nworkdir = "/{NUL}"\n',
    ],
)
def test_a_nul_in_any_string_is_refused_by_dry_run(confdir: Path, text: str) -> None:
    config = write(confdir / "pyinit.toml", text)
    result = run_pyinit("--dry-run", "--config", str(config), "--", "main", env=base_environment())
    line = one_line_125(result)
    assert "NUL" in line or "bad variable name" in line, line


def test_a_nul_is_refused_before_mkdir_ran(sandbox: Sandbox, confdir: Path) -> None:
    made = confdir / "made"
    config = write(confdir / "pyinit.toml", f'mkdir = ["{made}"]\nworkdir = "/x{NUL}"\n')
    result = sandbox.pyinit("--config", str(config), "--", "true", pid_namespace=True)
    assert "holds a NUL character" in one_line_125(result)
    assert not made.exists()


# --- 6. deep nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["command = " + "[" * 5000 + "]" * 5000, "pre = " + "{a = " * 5000 + "1" + "}" * 5000],
)
def test_deep_nesting_is_one_line(confdir: Path, text: str) -> None:
    config = write(confdir / "pyinit.toml", text + "\n")
    result = run_pyinit("--dry-run", "--config", str(config), "x", env=base_environment())
    assert "nested too deeply" in one_line_125(result)


def test_huge_integers_are_one_line(confdir: Path) -> None:
    config = write(confdir / "pyinit.toml", "stop-timeout = " + "9" * 5000 + "\n")
    result = run_pyinit("--dry-run", "--config", str(config), "x", env=base_environment())
    assert "out of range" in one_line_125(result)


# --- 7. FIFOs, devices, huge files -------------------------------------------------------------


def test_a_fifo_config_is_refused_at_once(sandbox: Sandbox, confdir: Path) -> None:
    fifo = confdir / "pyinit.toml"
    os.mkfifo(fifo)
    result = sandbox.pyinit("--config", str(fifo), "--", "true", pid_namespace=True, timeout=15)
    assert one_line_125(result) == (f"pyinit: --config '{fifo}': is a FIFO, not a regular file\n")


def test_a_device_and_a_huge_file_are_refused(confdir: Path) -> None:
    assert error_of(["--config", "/dev/zero", "x"]) == (
        "--config '/dev/zero': is a character device, not a regular file"
    )
    huge = confdir / "huge.toml"
    with huge.open("w") as f:
        f.write("# padding\n" * 110_000)
    assert error_of(["--config", str(huge), "x"]) == f"--config '{huge}': larger than 1024 KiB"


def test_a_symlink_to_a_fifo_is_refused_too(confdir: Path) -> None:
    os.mkfifo(confdir / "fifo")
    (confdir / "pyinit.toml").symlink_to("fifo")
    assert "is a FIFO" in error_of(["--config", str(confdir / "pyinit.toml"), "x"])


# --- 8. untrusted text stays one short line ----------------------------------------------------

FORGED = "x\\npyinit: forged line\\u001b[2K\\r" + "A" * 10_000


@pytest.mark.parametrize("kind", ["sidecar", "task"])
def test_an_item_name_cannot_forge_lines_or_drive_the_terminal(confdir: Path, kind: str) -> None:
    config = write(confdir / "pyinit.toml", f'[[start]]\n{kind} = "{FORGED}"\ncommand = ["x"]\n')
    result = run_pyinit("--dry-run", "--config", str(config), "main", env=base_environment())
    line = one_line_125(result)
    assert "\x1b" not in line and "\r" not in line
    assert len(line) < 500
    assert "bad name 'x\\npyinit: forged line\\x1b[2K\\rAAA" in line


def test_a_flag_items_text_is_cut_too() -> None:
    text = "x\ny\x1b[2K" + "B" * 10_000 + " -- true"
    result = run_pyinit("--dry-run", "--sidecar", text, "main", env=base_environment())
    line = one_line_125(result)
    assert "\x1b" not in line and len(line) < 500


def test_a_key_name_is_quoted_and_cut(confdir: Path) -> None:
    config = write(confdir / "pyinit.toml", '"\\u001b]0;pwned\\u0007' + "k" * 5000 + '" = 1\n')
    line = one_line_125(run_pyinit("--dry-run", "--config", str(config), "x"))
    assert "\x1b" not in line and "\x07" not in line and len(line) < 500


# --- 12. several files, directories, merge order -----------------------------------------------


def test_two_configs_merge_in_order(confdir: Path) -> None:
    a = write(
        confdir / "a.toml",
        'user = "nobody"\nstop-timeout = 3\nmkdir = ["/srv/a"]\ncommand = ["a"]\n'
        '[[start]]\nsidecar = "db"\ncommand = ["db"]\n',
    )
    b = write(
        confdir / "b.toml",
        'stop-timeout = 5\nmkdir = ["/srv/b"]\n[[start]]\ntask = "migrate"\ncommand = ["m"]\n',
    )
    plan = plan_for(["--config", str(a), "--config", str(b)])
    assert plan.identity is not None and plan.identity.name == "nobody"  # from a, kept
    assert plan.stop_timeout == 5  # b wins
    assert [m.path for m in plan.mkdirs] == ["/srv/a", "/srv/b"]  # lists append
    assert [i.name for i in plan.items] == ["db", "migrate"]  # file order
    assert plan.command == ("a",)
    assert plan.config_files == (str(a), str(b))


def test_a_duplicate_item_name_names_both_files(confdir: Path) -> None:
    a = write(confdir / "a.toml", '[[start]]\nsidecar = "db"\ncommand = ["x"]\n')
    b = write(confdir / "b.toml", '[[start]]\ntask = "db"\ncommand = ["y"]\n')
    message = error_of(["--config", str(a), "--config", str(b), "main"])
    assert message == (
        f"{b}: [[start]] #1 (db): duplicate name 'db' (first used by {a}: [[start]] #1 (db))"
    )


def test_a_directory_reads_its_toml_files_in_name_order(confdir: Path) -> None:
    conf_d = confdir / "conf.d"
    conf_d.mkdir()
    write(conf_d / "20-worker.toml", '[[start]]\nsidecar = "worker"\ncommand = ["w"]\n')
    write(conf_d / "10-base.toml", 'command = ["app"]\nstop-timeout = 4\n')
    write(conf_d / "README", "not toml")
    write(conf_d / ".hidden.toml", "not = [toml")
    write(conf_d / "30-late.toml", "stop-timeout = 6\n")
    plan = plan_for(["--config", str(conf_d)])
    assert plan.config_files == tuple(
        f"{conf_d}/{n}" for n in ("10-base.toml", "20-worker.toml", "30-late.toml")
    )
    assert (plan.command, plan.stop_timeout) == (("app",), 6)
    assert [i.name for i in plan.items] == ["worker"]


def test_a_directory_inside_a_config_directory_is_refused(confdir: Path) -> None:
    conf_d = confdir / "conf.d"
    (conf_d / "sub.toml").mkdir(parents=True)
    assert (
        error_of(["--config", str(conf_d), "x"]) == f"--config '{conf_d}/sub.toml': is a directory"
    )


def test_an_empty_config_path_is_refused() -> None:
    assert error_of(["--config", "", "x"]) == "--config '': empty path"


def test_dry_run_lists_the_files_read(confdir: Path) -> None:
    a = write(confdir / "a.toml", 'command = ["true"]\n')
    b = write(confdir / "b.toml", "stop-timeout = 2\n")
    result = run_pyinit("--dry-run", "--config", str(a), "--config", str(b))
    assert result.returncode == 0, result.stderr
    assert f"config files (merged in this order): {a}, {b}" in result.stdout.splitlines()


def test_pyinit_config_still_names_one_file(confdir: Path) -> None:
    a = write(confdir / "a.toml", 'command = ["from-env"]\n')
    plan = plan_for([], base_environment(PYINIT_CONFIG=str(a)))
    assert plan.command == ("from-env",)
