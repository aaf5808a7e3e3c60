"""The unit builder and the unit policy, as pure functions: options in, unit text out; text in, findings out."""

from __future__ import annotations

import pytest

from kedge.errors import ConfigError
from kedge.systemd import policy
from kedge.systemd.units import EDGE_NOFILE, CLOUD_NOFILE, UnitOptions, placement_notes, render, unit_name

KEDGE = "/opt/kedge/bin/kedge"


def unit(role: str, data_dir: str = "", **kw) -> str:
    data_dir = data_dir or f"/var/lib/kedge/{role}"
    return render(UnitOptions(role=role, data_dir=data_dir, kedge_path=kw.pop("kedge_path", KEDGE), **kw))


def settings(text: str) -> policy.Effective:
    return policy.merge(policy.parse(text, "unit"))


def findings(role: str, *texts: str) -> list[str]:
    return policy.check_unit(role, [(f"f{i}", t) for i, t in enumerate(texts)])


@pytest.mark.parametrize("role", policy.ROLES)
@pytest.mark.parametrize("data_dir", ["/var/lib/kedge/{role}", "/srv/kedge/{role}", "/tmp/t/{role}",
                                      "/home/op/kedge {role}", "/root/x%y/{role}"])
def test_generated_unit_meets_its_own_policy(role, data_dir):
    assert findings(role, unit(role, data_dir.format(role=role))) == []


def test_unit_names_are_the_contract():
    assert unit_name("cloud") == "kedge-cloudcore.service"
    assert unit_name("edge") == "kedge-edgecore.service"


def test_cloudcore_runs_as_a_dedicated_user_with_no_capabilities():
    eff = settings(unit("cloud"))
    s = eff.scalars
    assert (s["User"], s["Group"]) == ("kedge", "kedge")
    assert eff.bounding_set == policy.CapSet(frozenset()) and eff.ambient is None
    assert s["ExecStart"] == f"{KEDGE} cloudcore --data-dir /var/lib/kedge/cloud"
    assert s["LimitNOFILE"] == str(CLOUD_NOFILE) == "65536"
    assert (s["StateDirectory"], s["StateDirectoryMode"]) == ("kedge/cloud", "0700")
    assert (s["ProtectProc"], s["ProcSubset"], s["PrivateUsers"], s["MemoryDenyWriteExecute"]) == (
        "invisible", "pid", "yes", "yes")
    assert eff.syscall_filter == policy.FilterList("allow", frozenset({"@system-service"}),
                                                   frozenset({"@privileged", "@resources"}))
    assert (s["Restart"], s["UMask"], s["NoNewPrivileges"]) == ("on-failure", "0077", "yes")


def test_cloudcore_user_and_group_are_options():
    s = settings(unit("cloud", user="kedge-cloud", group="kedge")).scalars
    assert (s["User"], s["Group"]) == ("kedge-cloud", "kedge")


def test_edgecore_is_root_with_a_bounded_capability_set_and_leaves_pods_running():
    eff = settings(unit("edge"))
    s = eff.scalars
    assert "User" not in s
    assert eff.bounding_set == policy.CapSet(frozenset(policy.EDGE_CAPABILITIES))
    assert set(policy.EDGE_CAPABILITIES) == {"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN",
                                             "CAP_DAC_OVERRIDE", "CAP_FOWNER"}
    assert s["KillMode"] == "process"  # pods outlive an edgecore restart (edge autonomy)
    # The pods root (kedge/edge/core.py SYSTEM_PODS_ROOT) and its parent, traverse-only for pods.
    assert (s["StateDirectory"], s["StateDirectoryMode"]) == ("kedge kedge/pods", "0711")
    assert s["LimitNOFILE"] == str(EDGE_NOFILE)
    # edgecore must see pod processes (other uids) and boot_id in /proc; pods may JIT.
    for key in ("ProtectProc", "ProcSubset", "PrivateUsers", "MemoryDenyWriteExecute"):
        assert key not in s
    assert s["ExecStart"] == f"{KEDGE} edgecore --data-dir /var/lib/kedge/edge"


def test_edge_pods_root_matches_edgecore():
    from kedge.edge.core import SYSTEM_PODS_ROOT

    assert str(SYSTEM_PODS_ROOT) == "/var/lib/" + settings(unit("edge")).scalars["StateDirectory"].split()[-1]


def test_data_dir_outside_var_lib_is_a_read_write_path():
    assert settings(unit("cloud", "/srv/kedge")).read_write_paths == ("/srv/kedge",)
    assert settings(unit("edge", "/srv/edge")).read_write_paths == ("/srv/edge",)
    assert settings(unit("edge", "/var/lib/kedge/edge")).read_write_paths == ()  # inside StateDirectory=kedge


def test_extra_read_write_paths():
    eff = settings(unit("cloud", read_write_paths=("/var/log/kedge",)))
    assert eff.read_write_paths == ("/var/log/kedge",)


def test_data_dir_hidden_by_private_tmp_is_bound_in():
    opts = UnitOptions(role="cloud", data_dir="/tmp/x/cloud", kedge_path=KEDGE)
    s = settings(render(opts)).scalars
    assert s["BindPaths"] == "/tmp/x/cloud" and s["PrivateTmp"] == "yes" and s["ProtectHome"] == "yes"
    assert any("PrivateTmp" in n for n in placement_notes(opts))


def test_data_dir_and_kedge_in_home_keep_other_homes_hidden():
    opts = UnitOptions(role="edge", data_dir="/home/op/edge", kedge_path="/root/venv/bin/kedge")
    s = settings(render(opts)).scalars
    assert (s["ProtectHome"], s["BindPaths"], s["BindReadOnlyPaths"]) == ("tmpfs", "/home/op/edge", "/root/venv")
    assert len(placement_notes(opts)) == 2


def test_a_python_the_sandbox_hides_is_bound_in_read_only():
    # A venv on a pyenv interpreter under /root: ProtectHome= would hide the interpreter itself.
    opts = UnitOptions(role="cloud", data_dir="/var/lib/kedge/cloud", kedge_path="/opt/kedge/bin/kedge",
                       interpreter="/root/.pyenv/versions/3.11.7/bin/python3.11")
    s = settings(render(opts)).scalars
    assert (s["ProtectHome"], s["BindReadOnlyPaths"]) == ("tmpfs", "/root/.pyenv/versions/3.11.7")
    assert "BindReadOnlyPaths" not in settings(unit("cloud", interpreter="/usr/bin/python3.11")).scalars


def test_specifiers_and_spaces_in_paths_are_escaped():
    text = unit("cloud", "/srv/a b%c$d", kedge_path="/opt/k%$/bin/kedge")
    assert settings(text).scalars["ExecStart"] == '/opt/k%%$$/bin/kedge cloudcore --data-dir "/srv/a b%%c$$d"'
    assert 'ReadWritePaths="/srv/a b%%c$d"\n' in text


@pytest.mark.parametrize("kw", [
    dict(role="worker"),
    dict(data_dir="relative/dir"),
    dict(data_dir="/srv/../etc"),
    dict(data_dir="/"),
    dict(data_dir='/srv/"quoted"'),
    dict(data_dir="/srv/new\nline"),
    dict(kedge_path="kedge"),
    dict(read_write_paths=("/srv/a\\b",)),
    dict(user="root"),
    dict(user="Bad User"),
    dict(group="root"),
    dict(role="edge", user="kedge-edge"),
    dict(role="edge", group="kedge"),
])
def test_bad_options_are_refused(kw):
    base = dict(role="cloud", data_dir="/var/lib/kedge/cloud", kedge_path=KEDGE)
    with pytest.raises(ConfigError):
        UnitOptions(**{**base, **kw})


def test_every_directive_the_unit_sets_is_explained_or_self_evident():
    # Every remaining exposure systemd-analyze counts for edgecore is named in the unit's comments.
    text = unit("edge")
    for item in ("User=root", "PrivateNetwork=", "IPAddressDeny=", "ProtectProc=", "PrivateUsers=",
                 "MemoryDenyWriteExecute=", "~@privileged", "~@resources", "CAP_KILL", "RootDirectory=", "DeviceAllow="):
        assert item in text, item


# --------------------------------------------------------------------------- the policy, on planted units

WEAKENINGS = [
    ("cloud", "[Service]\nUser=\n", "User="),
    ("cloud", "[Service]\nUser=root\n", "User="),
    ("cloud", "[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "CapabilityBoundingSet="),
    ("cloud", "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN\n", "CapabilityBoundingSet="),
    ("cloud", "[Service]\nAmbientCapabilities=CAP_NET_RAW\n", "AmbientCapabilities="),
    ("cloud", "[Service]\nProtectSystem=full\n", "ProtectSystem="),
    ("cloud", "[Service]\nProtectSystem=\n", "ProtectSystem="),
    ("cloud", "[Service]\nNoNewPrivileges=false\n", "NoNewPrivileges="),
    ("cloud", "[Service]\nMemoryDenyWriteExecute=no\n", "MemoryDenyWriteExecute="),
    ("cloud", "[Service]\nProtectProc=default\n", "ProtectProc="),
    ("cloud", "[Service]\nSystemCallFilter=@mount\n", "SystemCallFilter="),
    ("cloud", "[Service]\nSystemCallFilter=\n", "SystemCallFilter="),
    ("cloud", "[Service]\nSystemCallFilter=\nSystemCallFilter=@system-service\n", "SystemCallFilter=~"),
    ("cloud", "[Service]\nRestrictAddressFamilies=AF_NETLINK\n", "RestrictAddressFamilies="),
    ("cloud", "[Service]\nRestrictAddressFamilies=\nRestrictAddressFamilies=~AF_PACKET\n", "RestrictAddressFamilies="),
    ("cloud", "[Service]\nReadWritePaths=/etc\n", "ReadWritePaths="),
    ("cloud", "[Service]\nReadWritePaths=-/usr/local/bin\n", "ReadWritePaths="),
    ("cloud", "[Service]\nUMask=0022\n", "UMask="),
    ("edge", "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n", "CapabilityBoundingSet="),
    ("edge", "[Service]\nCapabilityBoundingSet=~\n", "CapabilityBoundingSet="),
    ("edge", "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_PTRACE\n", "CapabilityBoundingSet="),
    ("edge", "[Service]\nAmbientCapabilities=~CAP_SYS_MODULE\n", "AmbientCapabilities="),
    ("edge", "[Service]\nPrivateDevices=no\n", "PrivateDevices="),
    ("edge", "[Service]\nRestrictNamespaces=no\n", "RestrictNamespaces="),
    ("edge", "[Service]\nSystemCallFilter=@debug\n", "SystemCallFilter="),
    ("edge", "[Service]\nSystemCallArchitectures=\n", "SystemCallArchitectures="),
]


@pytest.mark.parametrize("role, dropin, directive", WEAKENINGS)
def test_a_drop_in_that_weakens_the_unit_is_found(role, dropin, directive):
    problems = findings(role, unit(role), dropin)
    assert any(p.startswith(directive) for p in problems), problems


def test_drop_ins_that_keep_or_tighten_the_policy_pass():
    tighten = ("[Service]\nCapabilityBoundingSet=~CAP_KILL CAP_SYS_MODULE\nRestrictAddressFamilies=~AF_UNIX\n"
               "SystemCallFilter=~@resources\nReadWritePaths=/var/log/kedge\nUMask=0177\nTasksMax=4096\n")
    assert findings("edge", unit("edge"), tighten) == []
    assert findings("cloud", unit("cloud"), "[Service]\nDynamicUser=yes\nUser=\n") == []


def test_settings_outside_the_service_section_do_not_count():
    assert any(p.startswith("ProtectSystem=") for p in findings("cloud", unit("cloud"), "[Unit]\nProtectSystem=yes\n"
                                                                    "[Service]\nProtectSystem=no\n"))
    assert findings("cloud", unit("cloud"), "[Install]\nProtectSystem=no\n") == []


def test_boolean_spellings_are_systemds():
    assert findings("cloud", unit("cloud"), "[Service]\nNoNewPrivileges=true\nPrivateTmp=on\nLockPersonality=1\n") == []


def test_a_unit_without_any_hardening_fails_everything():
    problems = findings("edge", "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/kedge edgecore\n")
    assert len(problems) >= len(policy.REQUIRED["edge"]) + 3


def test_parser_joins_continuation_lines_and_skips_comments():
    got = policy.parse("# c\n; c\n[Service]\nA=1 \\\n# inside\n  2\n\n  B = x=y\n", "u")
    assert [(a.section, a.key, a.value.split()) for a in got] == [("Service", "A", ["1", "2"]),
                                                                  ("Service", "B", ["x=y"])]


@pytest.mark.parametrize("text", ["A=1\n", "[Service]\nno equals sign\n", "[Service]\n" + "A=1\n" * 20_000])
def test_parser_refuses_what_is_not_a_unit_file(text):
    with pytest.raises(policy.UnitSyntaxError):
        policy.parse(text)


def test_exposure_is_parsed_from_systemd_analyze_output():
    out = "  NAME  DESCRIPTION  EXPOSURE\n...\n→ Overall exposure level for kedge-cloudcore.service: 1.1 OK 🙂\n"
    assert policy.parse_exposure(out) == 1.1
    with pytest.raises(ValueError):
        policy.parse_exposure("Unit kedge-cloudcore.service not found.\n")
