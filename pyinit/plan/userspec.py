"""User-spec resolution: ``user[:group]`` to uid, gid, groups and HOME, as gosu does.

gosu resolves its argument with Docker's own parser (``GetExecUser``); pyinit
matches it field for field:

* ``user``, ``user:group``, ``uid``, ``uid:gid``, ``user:gid``, ``uid:group``;
  fields after a second ``:`` are ignored;
* an all-digit field is always an id, never a name; ids run 0..2147483647;
* a numeric uid with no passwd entry is allowed: gid = the caller's gid, no
  supplementary groups, HOME=/;
* without an explicit group, the supplementary groups are every group whose
  member list names the user (the primary group is not added, exactly like
  gosu); with an explicit group there are none;
* an empty user field (``:group``) means the current uid.

Names are read from ``/etc/passwd`` and ``/etc/group`` directly, not through
NSS (``pwd``/``grp``).  That is what gosu, runc and Docker do: in a container
the files *are* the user database, NSS modules such as sssd or LDAP are
absent or would reach outside the container, and reading files keeps
resolution pure, fast and identical to the runtime's own ``USER`` handling.
"""

from __future__ import annotations

import os

from pyinit.errors import UsageError, quoted
from pyinit.plan.files import FileTooLarge, NotRegularFile, read_open_regular
from pyinit.record import Record

MAX_ID = 2147483647
PASSWD_PATH = "/etc/passwd"
GROUP_PATH = "/etc/group"


class PasswdEntry(Record):
    """One line of /etc/passwd."""

    __slots__ = ("gid", "home", "name", "shell", "uid")
    name: str
    uid: int
    gid: int
    home: str
    shell: str


class GroupEntry(Record):
    """One line of /etc/group."""

    __slots__ = ("gid", "members", "name")
    name: str
    gid: int
    members: tuple[str, ...]


class Identity(Record):
    """Who the target runs as: everything the step-down needs, fully resolved."""

    __slots__ = ("explicit_group", "gid", "groups", "home", "name", "spec", "uid")
    spec: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str | None
    explicit_group: bool

    def describe(self) -> str:
        """``redis (uid 999, gid 999, groups [])``: for logs and --dry-run."""
        who = self.name if self.name is not None else f"uid {self.uid}"
        groups = ",".join(str(g) for g in self.groups)
        return f"{who} (uid {self.uid}, gid {self.gid}, groups [{groups}], home {self.home})"


def _split_fields(line: str) -> list[str]:
    return line.split(":")


def _parse_db_id(text: str) -> int | None:
    """An id field of /etc/passwd or /etc/group: ASCII digits, 0..MAX_ID, else None.

    Docker's parser (and so gosu) reads an unparsable id as 0 and wraps large
    ones modulo 2**32: ``evil:x:\u0661\u0662:\u0660`` would be root.  pyinit skips such
    a line instead, so garbage never resolves to root or overflows setgroups.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def read_passwd(path: str = PASSWD_PATH) -> list[PasswdEntry]:
    """Parse a passwd file; comments, blank, NIS (+/-) and malformed lines are skipped.

    Malformed: fewer than 4 fields, or a uid/gid that is not plain ASCII
    digits in 0..2147483647.
    """
    entries = []
    for line in _read_lines(path):
        fields = _split_fields(line)
        if len(fields) < 4 or fields[0][:1] in ("", "#", "+", "-"):
            continue
        uid, gid = _parse_db_id(fields[2]), _parse_db_id(fields[3])
        if uid is None or gid is None:
            continue
        home = fields[5] if len(fields) > 5 else ""
        shell = fields[6] if len(fields) > 6 else ""
        entries.append(PasswdEntry(name=fields[0], uid=uid, gid=gid, home=home, shell=shell))
    return entries


def read_group(path: str = GROUP_PATH) -> list[GroupEntry]:
    """Parse a group file; comments, blank, NIS (+/-) and malformed lines are skipped.

    Malformed: fewer than 3 fields, or a gid that is not plain ASCII digits
    in 0..2147483647.
    """
    entries = []
    for line in _read_lines(path):
        fields = _split_fields(line)
        if len(fields) < 3 or fields[0][:1] in ("", "#", "+", "-"):
            continue
        gid = _parse_db_id(fields[2])
        if gid is None:
            continue
        members_field = fields[3] if len(fields) > 3 else ""
        members = tuple(m.strip() for m in members_field.split(",") if m.strip())
        entries.append(GroupEntry(name=fields[0], gid=gid, members=members))
    return entries


#: Whitespace trimmed around each line, as Docker's parser does (bytes.TrimSpace).
_LINE_SPACE = " \t\n\v\f\r"

#: A user database larger than this is refused rather than read into memory.
MAX_DATABASE_BYTES = 64 * 1024 * 1024


def _read_lines(path: str) -> list[str]:
    # A missing file is an empty database, as in Docker: numeric ids still work.
    # Only "\n" ends a line (a stray "\r" inside a line does not split it, as
    # in Docker); the file is opened O_NONBLOCK and must be a regular file, so
    # a FIFO bind-mounted over /etc/passwd cannot hang PID 1.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = read_open_regular(fd, MAX_DATABASE_BYTES)
    except NotRegularFile:
        raise UsageError(f"cannot read {path}: not a regular file") from None
    except FileTooLarge:
        raise UsageError(f"cannot read {path}: larger than {MAX_DATABASE_BYTES} bytes") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="surrogateescape")
    return [line.strip(_LINE_SPACE) for line in text.split("\n")]


def _parse_id_field(field: str, kind: str, where: str) -> int | None:
    """An all-digit field is an id (range-checked); a signed or spaced one is an error.

    ``where`` prefixes the error, e.g. ``--user '1000:x'``.
    """
    if field.isdigit() and field.isascii():
        value = int(field)
        if value > MAX_ID:
            raise UsageError(f"{where}: {kind} {field} is out of range (0..{MAX_ID})")
        return value
    stripped = field.strip().lstrip("+-").strip()
    if stripped.isdigit() or any(c.isspace() for c in field):
        raise UsageError(
            f"{where}: invalid {kind} {quoted(field)} (ids are plain digits 0..{MAX_ID},"
            " names have no spaces or signs)"
        )
    return None


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``user[:group[:ignored...]]`` into its user and group fields."""
    fields = spec.split(":")
    user = fields[0]
    group = fields[1] if len(fields) > 1 else ""
    return user, group


def resolve_user_spec(
    spec: str,
    passwd: list[PasswdEntry] | None = None,
    groups: list[GroupEntry] | None = None,
    current_uid: int | None = None,
    current_gid: int | None = None,
) -> Identity:
    """Resolve a gosu/Docker user spec against the passwd and group databases.

    Raises UsageError (exit 125) naming the spec for unknown names, bad ids
    and out-of-range values.  ``current_uid``/``current_gid`` (what a spec
    without a user or group part means: pyinit's real ids, from the host
    snapshot; default: read now).  Pure: reads the two files, changes nothing.
    """
    if spec == "":
        raise UsageError("--user: empty user spec (expected user[:group], uid[:gid], ...)")
    if passwd is None:
        passwd = read_passwd()
    if groups is None:
        groups = read_group()
    uid_now = os.getuid() if current_uid is None else current_uid
    gid_now = os.getgid() if current_gid is None else current_gid

    user_field, group_field = split_spec(spec)
    where = f"--user {quoted(spec)}"
    uid_arg = _parse_id_field(user_field, "uid", where) if user_field else None
    gid_arg = _parse_id_field(group_field, "gid", where) if group_field else None

    entry = _find_user(passwd, user_field, uid_arg, uid_now)
    if entry is not None:
        uid, gid, home, name = entry.uid, entry.gid, entry.home or "/", entry.name
    elif user_field and uid_arg is None:
        raise UsageError(
            f"--user {quoted(spec)}: unknown user {quoted(user_field)} (not in {PASSWD_PATH})"
        )
    else:
        uid = uid_arg if uid_arg is not None else uid_now
        gid, home, name = gid_now, "/", None

    supplementary: tuple[int, ...] = ()
    if group_field:
        gid = _find_group_id(groups, group_field, gid_arg, spec)
    elif name is not None:
        supplementary = tuple(g.gid for g in groups if name in g.members)

    return Identity(
        spec=spec,
        uid=uid,
        gid=gid,
        groups=_unique(supplementary),
        home=home,
        name=name,
        explicit_group=bool(group_field),
    )


def resolve_user_spec_as(spec: str, where: str, current: tuple[int, int] | None = None) -> Identity:
    """:func:`resolve_user_spec` for a spec not given as ``--user``: errors start with ``where``.

    ``current`` is pyinit's (uid, gid), from the host snapshot (default: read now).
    """
    uid, gid = current if current is not None else (None, None)
    try:
        return resolve_user_spec(spec, current_uid=uid, current_gid=gid)
    except UsageError as e:
        reason = e.message.removeprefix(f"--user {quoted(spec)}: ").removeprefix("--user: ")
        raise UsageError(f"{where}: {reason}") from None


def _find_user(
    passwd: list[PasswdEntry], user_field: str, uid_arg: int | None, uid_now: int
) -> PasswdEntry | None:
    # First match wins, even when several lines match (Docker's rule).
    for entry in passwd:
        if not user_field:
            if entry.uid == uid_now:
                return entry
        elif uid_arg is not None:
            if entry.uid == uid_arg:
                return entry
        elif entry.name == user_field:
            return entry
    return None


def _find_group_id(
    groups: list[GroupEntry], group_field: str, gid_arg: int | None, spec: str
) -> int:
    for entry in groups:
        if (gid_arg is not None and entry.gid == gid_arg) or (
            gid_arg is None and entry.name == group_field
        ):
            return entry.gid
    if gid_arg is None:
        raise UsageError(
            f"--user {quoted(spec)}: unknown group {quoted(group_field)} (not in {GROUP_PATH})"
        )
    return gid_arg


def resolve_group(name_or_gid: str, flag: str, groups: list[GroupEntry] | None = None) -> int:
    """Resolve one group name or gid (for ``--groups``); raises UsageError naming the flag."""
    if not name_or_gid:
        raise UsageError(f"{flag}: empty group name")
    if groups is None:
        groups = read_group()
    gid_arg = _parse_id_field(name_or_gid, "gid", f"{flag} {quoted(name_or_gid)}")
    for entry in groups:
        # An all-digit field is always a gid, never a group name (as for --user).
        if (gid_arg is not None and entry.gid == gid_arg) or (
            gid_arg is None and entry.name == name_or_gid
        ):
            return entry.gid
    if gid_arg is None:
        raise UsageError(f"{flag} {quoted(name_or_gid)}: unknown group (not in {GROUP_PATH})")
    return gid_arg


def _unique(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


def needs_identity_switch(
    identity: Identity,
    euid: int,
    egid: int,
    groups: tuple[int, ...],
    extra_groups: tuple[int, ...] = (),
) -> bool:
    """False when already running as the asked user (Kubernetes runAsUser), so no setuid is needed.

    Root asking for root still switches: that drops root's inherited
    supplementary groups, as gosu does.
    """
    if euid == 0:
        return True
    same_user = identity.uid == euid and identity.gid == egid
    # --groups not held yet can only be added by a switch (which needs CAP_SETGID).
    has_groups = set(extra_groups) <= set(groups)
    return not (same_user and has_groups)
