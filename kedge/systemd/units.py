"""Build ``kedge-cloudcore.service`` and ``kedge-edgecore.service``: a pure function of the options.

Each unit is the strictest sandbox its process tolerates (:mod:`kedge.systemd.policy` is
the bar, ``systemd-analyze security`` exposure <= 2.0 for cloudcore and <= 4.0 for
edgecore), and says in comments why each exposure that remains is there. The text depends
only on :class:`UnitOptions`; nothing here reads the machine.

Paths a sandbox would hide are handled, not refused: a data directory under ``/tmp`` or
``/var/tmp`` (hidden by ``PrivateTmp=``) or under ``/home``, ``/root``, ``/run/user``
(hidden by ``ProtectHome=``) is bound into the unit's namespace with ``BindPaths=`` (and
``ProtectHome=tmpfs`` keeps the rest of the home directories hidden); a ``kedge`` installed
in such a place has its installation root bound read-only. :func:`placement_notes` says so,
so the CLI can tell the operator.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import textwrap

from kedge.errors import ConfigError
from kedge.systemd.policy import ADDRESS_FAMILIES, CLOUD, CLOUD_SYSCALL_DENY, COMMANDS, EDGE, \
    EDGE_CAPABILITIES, ROLES, SYSCALL_ALLOW, UNIT_NAMES

DEFAULT_USER = "kedge"
STATE_ROOT = "/var/lib"
PODS_STATE_DIRS = ("kedge", "kedge/pods")  # kedge.edge.core.SYSTEM_PODS_ROOT and its parent, 0711
CLOUD_NOFILE = 65536  # one per edge connection, per watch and per API client, with room to spare
EDGE_NOFILE = 16384  # edgecore's own few dozen, and the pods', which inherit the limit
# The trees PrivateTmp= replaces: compared against, never written to.
_TMP_TREES = ("/tmp", "/var/tmp")  # noqa: S108  # nosec B108 - path names compared against, nothing is written there
_HOME_TREES = ("/home", "/root", "/run/user")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?", re.ASCII)
_BAD_PATH_CHARS = re.compile(r'[\x00-\x1f\x7f"\'\\]')


@dataclasses.dataclass(frozen=True)
class UnitOptions:
    """What a unit is built from. Paths are absolute; validated on construction."""

    role: str
    data_dir: str
    kedge_path: str
    user: str = DEFAULT_USER  # cloudcore's service user (edgecore runs as root)
    group: str = ""  # "" = the user's name
    read_write_paths: tuple[str, ...] = ()  # more places the process writes (an audit log elsewhere)
    interpreter: str = ""  # the Python kedge runs on, symlinks resolved ("" = not known)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}", code="bad_role")
        for label, path in (("data dir", self.data_dir), ("kedge path", self.kedge_path),
                            *(("read-write path", p) for p in self.read_write_paths),
                            *((("interpreter", self.interpreter),) if self.interpreter else ())):
            _check_path(label, path)
        if self.role == CLOUD:
            for label, name in (("user", self.user), ("group", self.group or self.user)):
                if not _USER.fullmatch(name) or name == "root":
                    raise ConfigError(f"cloudcore's {label} must be a non-root system account name, not {name!r}",
                                      code="bad_user")
        elif self.user not in (DEFAULT_USER, "root") or self.group:
            raise ConfigError("edgecore runs as root (its pods run as distinct uids); --user/--group are for "
                              "--role cloud", code="bad_user")


def _check_path(label: str, path: str) -> None:
    if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
        raise ConfigError(f"{label} must be an absolute, normalised path other than /: {path!r}", code="bad_path")
    if _BAD_PATH_CHARS.search(path):
        raise ConfigError(f"{label} {path!r} has a quote, backslash or control character", code="bad_path")


def _under(path: str, trees: tuple[str, ...]) -> bool:
    return any(path == t or path.startswith(t + "/") for t in trees)


def _word(value: str, *, exec_line: bool = False) -> str:
    """One word of a unit setting: ``%`` (and ``$`` on Exec lines) escaped, quoted if it has spaces."""
    value = value.replace("%", "%%")
    if exec_line:
        value = value.replace("$", "$$")
    return f'"{value}"' if re.search(r"\s", value) else value


def unit_name(role: str) -> str:
    return UNIT_NAMES[role]


def _install_root(kedge_path: str) -> str:
    """The tree a ``kedge`` console script lives in (``VENV/bin/kedge`` -> ``VENV``)."""
    parent = posixpath.dirname(kedge_path)
    return posixpath.dirname(parent) if posixpath.basename(parent) == "bin" else parent


def placement_notes(opts: UnitOptions) -> list[str]:
    """What the operator should know about where the paths are (sandbox bindings used)."""
    notes = []
    for label, path in (("data dir", opts.data_dir), *(("read-write path", p) for p in opts.read_write_paths)):
        if _under(path, _TMP_TREES):
            notes.append(f"{label} {path} is under a temporary directory the unit's PrivateTmp= hides; it is "
                         "bound in with BindPaths= (a data dir belongs under /var/lib)")
        elif _under(path, _HOME_TREES):
            notes.append(f"{label} {path} is in a home directory; the unit binds it in with BindPaths= and "
                         "hides the other home directories (ProtectHome=tmpfs)")
    for label, path in (("kedge", opts.kedge_path), ("its Python", opts.interpreter)):
        if path and _under(path, _TMP_TREES + _HOME_TREES):
            notes.append(f"{label} {path} is installed where the sandbox hides it; {_install_root(path)} is bound "
                         "in read-only (install kedge and its Python under /opt or /usr, readable by the service user)")
    return notes


def _paths(opts: UnitOptions) -> tuple[list[tuple[str, str, str]], bool]:
    """The filesystem directives (key, value, comment) and whether a home tree is bound in."""
    out: list[tuple[str, str, str]] = []
    home = False
    writable = [opts.data_dir, *opts.read_write_paths]
    if opts.role == EDGE:
        out.append(("StateDirectory", " ".join(PODS_STATE_DIRS),
                    "the pods root /var/lib/kedge/pods/<node>-<hash> lives here (kedge/edge/core.py); systemd creates "
                    "and opens these two, mode 0711 (traverse-only, so pods reach their own directory)"))
        out.append(("StateDirectoryMode", "0711", ""))
        writable = [p for p in writable if not _under(p, (f"{STATE_ROOT}/{PODS_STATE_DIRS[0]}",))]
    elif opts.data_dir.startswith(STATE_ROOT + "/"):
        rel = opts.data_dir[len(STATE_ROOT) + 1:]
        out.append(("StateDirectory", _word(rel),
                    "the data dir: systemd creates it, opens it read-write and makes it the service user's (0700)"))
        out.append(("StateDirectoryMode", "0700", ""))
        writable = list(opts.read_write_paths)
    plain = [p for p in writable if not _under(p, _TMP_TREES + _HOME_TREES)]
    bound = [p for p in writable if _under(p, _TMP_TREES + _HOME_TREES)]
    if plain:
        out.append(("ReadWritePaths", " ".join(_word(p) for p in plain),
                    "the only places it writes (must exist at start; everything else is read-only)"))
    if bound:
        home = home or any(_under(p, _HOME_TREES) for p in bound)
        out.append(("BindPaths", " ".join(_word(p) for p in bound),
                    "written to, but hidden by PrivateTmp=/ProtectHome=: bound in from the host"))
    installs = [p for p in (opts.kedge_path, opts.interpreter) if p and _under(p, _TMP_TREES + _HOME_TREES)]
    if installs:
        home = home or any(_under(p, _HOME_TREES) for p in installs)
        roots = list(dict.fromkeys(_install_root(p) for p in installs))
        out.append(("BindReadOnlyPaths", " ".join(_word(r) for r in roots),
                    "kedge's installation and its Python, hidden by the sandbox otherwise"))
    return out, home


def _header(opts: UnitOptions) -> list[str]:
    name = unit_name(opts.role)
    lines = [
        f"# {name} -- generated by `kedge systemd --role {opts.role}`. Regenerate rather than edit; put local",
        f"# changes in a drop-in (systemctl edit {name}) and run `kedge audit`: it checks the installed unit",
        "# and its drop-ins against the policy this unit was built to (kedge/systemd/policy.py).",
        "#",
    ]
    if opts.role == CLOUD:
        group = opts.group or opts.user
        lines += [
            f"# Runs as the system user {opts.user!r}, which must own the data dir and every file in it (key",
            "# files included: they are 0600). Once, as root:",
            f"#   useradd --system --user-group --home-dir / --shell /usr/sbin/nologin {opts.user}",
            f"#   install -d -m 0700 -o {opts.user} -g {group} {opts.data_dir}",
            f"#   runuser -u {opts.user} -- kedge init --data-dir {opts.data_dir} ...",
            f"#   systemctl enable --now {name}",
            f"# and run every later admin command on the data dir as {opts.user} too (runuser -u {opts.user} --",
            "# kedge token create ...): a file root creates there is one cloudcore cannot open. A data dir",
            "# under /var/lib is a StateDirectory=, which systemd hands to the user at each start.",
        ]
    else:
        lines += [
            "# Runs as root, because edged runs each pod as its own uid: root's power is bounded by the",
            "# capability set below and the sandbox. Pods are children of edgecore, so they inherit this",
            "# sandbox (read-only OS, private /tmp, no devices, the system call and socket allow-lists);",
            "# grant a pod's needs with a drop-in, e.g. a serial port for a mapper:",
            "#   PrivateDevices=no, DevicePolicy=closed, DeviceAllow=/dev/ttyUSB0 rw",
            "# Once, as root: kedge join ... --data-dir DIR; then systemctl enable --now " + name,
        ]
    return lines + ["#"]


def _exposure_notes(role: str) -> list[str]:
    """Why each item ``systemd-analyze security`` still counts is there."""
    common = [
        "# What `systemd-analyze security` still counts, and why:",
        "#   PrivateNetwork=, IPAddressDeny=, RestrictAddressFamilies=~AF_(INET|INET6): it serves (and dials)",
        "#     the network -- that is its job; which peers may connect is decided by mutual TLS, not by IP.",
        "#   RestrictAddressFamilies=~AF_UNIX: name resolution through nss (nscd, systemd-resolved) and",
        "#     the journal use local sockets.",
        "#   RootDirectory=/RootImage=: it runs from the host's Python and its installation, read-only",
        "#     through ProtectSystem=strict.",
        "#   DeviceAllow= char-rtc:r: ProtectClock= itself adds it (read-only; PrivateDevices= hides the device).",
    ]
    if role == CLOUD:
        return common
    return common + [
        "#   User=root, CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP), ~CAP_KILL, ~CAP_(CHOWN|FSETID|SETFCAP),",
        "#     ~CAP_(DAC_*|FOWNER|IPC_OWNER), SystemCallFilter=~@privileged (setuid and chown are there):",
        "#     edged starts each pod as its own uid/gid (setresuid, setgroups, setfsuid to resolve paths as the",
        "#     pod), signals pods, chowns their directories and manages files they own. Only CAP_SETUID,",
        "#     CAP_SETGID, CAP_KILL, CAP_CHOWN, CAP_DAC_OVERRIDE and CAP_FOWNER are kept.",
        "#   PrivateUsers=: pods need the host's uids (their files on disk, their processes).",
        "#   ProtectProc=, ProcSubset=: edgecore reads /proc/<pid> of pod processes (other uids: hidepid",
        "#     would hide them from a root without CAP_SYS_PTRACE) and /proc/sys/kernel/random/boot_id.",
        "#   MemoryDenyWriteExecute=: pods inherit it, and JIT runtimes (V8, the JVM, LuaJIT) need W+X memory.",
        "#   SystemCallFilter=~@resources: pods inherit the filter too, and may lower their own priority and",
        "#     set their own resource limits (ulimit, the JVM raising its descriptor limit).",
    ]


def _directives(opts: UnitOptions) -> list[tuple[str, str, str]]:
    cloud = opts.role == CLOUD
    exec_start = " ".join([_word(opts.kedge_path, exec_line=True), COMMANDS[opts.role], "--data-dir",
                           _word(opts.data_dir, exec_line=True)])
    paths, home = _paths(opts)
    d: list[tuple[str, str, str]] = [("Type", "exec", "")]
    if cloud:
        d += [("User", opts.user, "a dedicated system user; no capabilities at all (below)"),
              ("Group", opts.group or opts.user, "")]
    d += [
        ("ExecStart", exec_start, ""),
        ("Environment", "PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
         "the installation is read-only in here; logs reach the journal as they are written"),
        ("Restart", "on-failure", ""),
        ("RestartSec", "5s", ""),
        ("TimeoutStopSec", "30s", ""),
    ]
    if not cloud:
        d.append(("KillMode", "process",
                  "pods outlive edgecore (edge autonomy): a stop or restart signals edgecore only, which leaves "
                  "its pods running and adopts them when it comes back. They share this unit's cgroup, so "
                  "TasksMax= (systemd's default, or a drop-in) bounds edgecore and its pods together"))
    d += [
        ("LimitNOFILE", str(CLOUD_NOFILE if cloud else EDGE_NOFILE), ""),
        ("UMask", "0077", "key files and databases are private from the moment they exist"),
        *paths,
        ("NoNewPrivileges", "yes", "" if cloud else
         "edgecore sets no_new_privs for its pods itself; nothing here gains privileges through exec"),
    ]
    if cloud:
        d += [("CapabilityBoundingSet", "", "no capabilities: ports 6443/10000/10002 need none"),
              ("AmbientCapabilities", "", "")]
    else:
        d += [("CapabilityBoundingSet", " ".join(EDGE_CAPABILITIES),
               "pods as distinct uids (SETUID/SETGID), signalling them (KILL), their directories (CHOWN, "
               "DAC_OVERRIDE, FOWNER); no NET_BIND_SERVICE: mosquitto listens on a high loopback port"),
              ("AmbientCapabilities", "", "")]
    d += [
        ("ProtectSystem", "strict", "the whole OS read-only, writable only where listed above"),
        ("ProtectHome", "tmpfs" if home else "yes", ""),
        ("PrivateTmp", "yes", ""),
        ("PrivateDevices", "yes", "" if cloud else "pods needing a device: see the header"),
        ("PrivateMounts", "yes", ""),
        ("PrivateIPC", "yes", ""),
    ]
    if cloud:
        d += [("PrivateUsers", "yes", "its own user namespace: every other uid is 'nobody' in here"),
              ("ProtectProc", "invisible", "only its own processes in /proc"),
              ("ProcSubset", "pid", "")]
    d += [
        ("ProtectKernelTunables", "yes", ""),
        ("ProtectKernelModules", "yes", ""),
        ("ProtectKernelLogs", "yes", ""),
        ("ProtectControlGroups", "yes", ""),
        ("ProtectClock", "yes", ""),
        ("ProtectHostname", "yes", ""),
        ("RestrictAddressFamilies", " ".join(ADDRESS_FAMILIES), "no netlink, packet or other exotic sockets"),
        ("RestrictNamespaces", "yes", ""),
        ("RestrictRealtime", "yes", ""),
        ("RestrictSUIDSGID", "yes", ""),
        ("LockPersonality", "yes", ""),
    ]
    if cloud:
        d += [("MemoryDenyWriteExecute", "yes", "CPython, uvloop and cryptography's compiled bindings map no W+X memory"),
              ("RemoveIPC", "yes", "")]
    d += [
        ("SystemCallArchitectures", "native", ""),
        ("SystemCallFilter", " ".join(SYSCALL_ALLOW), "what Python, SQLite, OpenSSL and uvloop use" if cloud else
         "what Python, SQLite, OpenSSL, mosquitto and ordinary pod processes use"),
    ]
    if cloud:
        d.append(("SystemCallFilter", "~" + " ".join(CLOUD_SYSCALL_DENY),
                  "no setuid/chown family, no resource-limit or scheduling changes"))
    d.append(("SystemCallErrorNumber", "EPERM", "a filtered call fails, instead of killing the process"))
    return d


def render(opts: UnitOptions) -> str:
    """The unit file text."""
    desc = ("kedge cloudcore (CloudHub, controllers, embedded API server)" if opts.role == CLOUD
            else "kedge edgecore (edge node: EdgeHub, MetaManager, edged, DeviceTwin)")
    lines = _header(opts) + [
        "[Unit]",
        f"Description={desc}",
        "Documentation=man:systemd.exec(5)",
        "Wants=network-online.target",
        "After=network-online.target",
        "# Restart=on-failure gives up after 5 failed starts in 5 minutes (then: systemctl reset-failed).",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        "",
        "[Service]",
        *_exposure_notes(opts.role),
    ]
    for key, value, comment in _directives(opts):
        if comment:
            lines += textwrap.wrap(comment, width=100, initial_indent="# ", subsequent_indent="#   ")
        lines.append(f"{key}={value}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
