"""The release build: clean clone -> hatchling -> SBOM -> sums, provenance, links.

Reproducibility rests on three things done here: the build input is a fresh
``git clone`` of one commit (never the working tree, which may hold uncommitted or
ignored files), ``SOURCE_DATE_EPOCH`` is that commit's committer time (hatchling
then pins every zip/tar timestamp and normalises modes and order), and the build
runs with a minimal, fixed environment. Everything is staged in a temporary
directory and moved into place only when complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import re
import secrets
import shutil
import subprocess  # nosec B404 - runs git and hatchling with fixed argument lists, no shell
import sys
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kedge import __version__
from kedge._internal.fsutil import sha256_file
from kedge.errors import ConfigError, StateError
from kedge.release import image, intoto, oci, provenance, sbom, sums

GIT_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 600
MAX_METADATA_BYTES = 1024 * 1024
DEFAULT_WORKFLOW_PATH = "Makefile"  # `make release` is the local entry point
_OUT_MARKER = sums.SUMS_NAME


@dataclasses.dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    wheel: str
    sdist: str
    sbom: str
    digests: Mapping[str, str]
    facts: provenance.BuildFacts
    warnings: tuple[str, ...] = ()
    image: str | None = None  # kedge-cloudcore-<version>.oci.tar
    image_sbom: str | None = None
    manifest_digest: str | None = None  # sha256:<hex> of the image manifest


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _git(args: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(  # nosec B603 B607 - fixed argv, git from PATH is the user's git
            ["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
            env=_git_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StateError(f"git {args[0]} failed to run", code="git_failed") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:500]
        raise StateError(f"git {args[0]} failed: {detail}", code="git_failed")
    return done.stdout.decode("utf-8", "replace").strip()


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


def normalise_remote(url: str) -> str | None:
    """``git@github.com:o/r.git`` / ``https://github.com/o/r.git`` -> ``https://github.com/o/r``."""
    url = url.strip()
    m = re.fullmatch(r"git@([A-Za-z0-9.-]+):([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if m:
        return f"https://{m.group(1)}/{m.group(2)}"
    m = re.fullmatch(r"(?:https|ssh|git)://(?:[^@/]+@)?([A-Za-z0-9.-]+)/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if m:
        return f"https://{m.group(1)}/{m.group(2)}"
    return None


def _github_env(env: Mapping[str, str]) -> dict[str, str]:
    """Facts from GitHub Actions' environment, only when it really is Actions."""
    if env.get("GITHUB_ACTIONS") != "true":
        return {}
    out: dict[str, str] = {}
    server, repo = env.get("GITHUB_SERVER_URL", ""), env.get("GITHUB_REPOSITORY", "")
    if re.fullmatch(r"https://[A-Za-z0-9.-]+", server) and re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        out["repository"] = f"{server}/{repo}"
        run_id, attempt = env.get("GITHUB_RUN_ID", ""), env.get("GITHUB_RUN_ATTEMPT", "")
        if run_id.isdigit() and attempt.isdigit():
            out["invocation_id"] = f"{server}/{repo}/actions/runs/{run_id}/attempts/{attempt}"
    ref = env.get("GITHUB_REF", "")
    if ref.startswith("refs/"):
        out["ref"] = ref
    wf = env.get("GITHUB_WORKFLOW_REF", "")  # OWNER/REPO/PATH@REF of the top-level workflow
    m = re.fullmatch(r"[\w.-]+/[\w.-]+/([^@\s]+)@\S+", wf)
    if m:
        out["workflow_path"] = m.group(1)
    return out


def _build_env(source_date_epoch: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}
    env.update({
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    })
    return env


def _load_link_key(path: Path) -> ec.EllipticCurvePrivateKey:
    from kedge.release.sign import load_private_key

    return load_private_key(path)


def _prepare_out(out_dir: Path) -> Path | None:
    """Refuse to clobber a directory that is not a previous release output."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise ConfigError(f"{out_dir} exists and is not a directory", code="bad_out_dir")
    if any(out_dir.iterdir()) and not (out_dir / _OUT_MARKER).is_file():
        raise ConfigError(f"{out_dir} is not empty and holds no previous release; refusing to replace it",
                          code="bad_out_dir")
    return out_dir


def build_release(
    out_dir: Path,
    *,
    source: Path = Path("."),
    commit: str = "HEAD",
    repository: str | None = None,
    ref: str | None = None,
    workflow_path: str | None = None,
    builder_id: str | None = None,
    invocation_id: str | None = None,
    link_key: Path | None = None,
    extras: tuple[str, ...] = ("cloud",),
    env: Mapping[str, str] | None = None,
    now: Callable[[], dt.datetime] = _utcnow,
    with_image: bool = True,
    cache_dir: Path | None = None,
) -> BuildResult:
    """Build the release of ``commit`` in repository ``source`` into ``out_dir``.

    With ``with_image`` (the default) the release also holds the cloudcore OCI image
    and its SBOM, assembled from the inputs pinned in ``provenance/image.lock.json``
    of the commit built (fetched into ``cache_dir``, verified by SHA-256).
    """
    env = os.environ if env is None else env
    started = now()
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd=source))
    full_commit = _git(["rev-parse", "--verify", "--end-of-options", f"{commit}^{{commit}}"], cwd=top)
    epoch = int(_git(["log", "-1", "--format=%ct", full_commit, "--"], cwd=top))
    gh = _github_env(env)
    if repository is None:
        repository = gh.get("repository")
    if repository is None:
        try:
            repository = normalise_remote(_git(["remote", "get-url", "origin"], cwd=top))
        except StateError:
            repository = None
    if repository is None:
        repository = top.resolve().as_uri()
    if ref is None:
        ref = gh.get("ref")
    if ref is None and commit == "HEAD":
        try:
            ref = _git(["symbolic-ref", "-q", "HEAD"], cwd=top)
        except StateError:
            ref = None
    ref = ref or full_commit
    prepared = _prepare_out(out_dir)

    if link_key is not None:
        functionary = _load_link_key(link_key)
    else:
        # Ephemeral: lives only in this process; the release key vouches for its public half.
        functionary = ec.generate_private_key(ec.SECP256R1())
    signer = intoto.signer_for(functionary)

    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kedge-release-") as work_s:
        work = Path(work_s)
        src = work / "src"
        # Public release directory (not mkdtemp's 0700); the random name keeps it exclusive.
        stage = parent / f".{out_dir.name}.{secrets.token_hex(8)}.tmp"
        stage.mkdir(mode=0o755)
        try:
            link_dir = stage / intoto.LINK_DIR
            link_dir.mkdir()
            # -- checkout ---------------------------------------------------------------
            _git(["clone", "--quiet", "--no-checkout", "--no-hardlinks", "--", str(top), str(src)])
            _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", full_commit], cwd=src)
            checkout_products = intoto.record(["."], src)
            intoto.write_link(link_dir, "checkout", ["git", "clone"], {}, checkout_products, signer)
            # -- build ------------------------------------------------------------------
            materials = intoto.record(["."], src)
            warnings = _backend_pin_warnings(src / "pyproject.toml")
            dist = work / "dist"
            _run_hatchling(src, dist, epoch)
            wheel, sdist = _artifacts(dist)
            build_products = intoto.record([wheel, sdist], dist)
            intoto.write_link(link_dir, "build",
                              ["python", "-m", "hatchling", "build", "-t", "sdist", "-t", "wheel"],
                              materials, build_products, signer)
            # -- sbom -------------------------------------------------------------------
            sbom_materials = intoto.record([wheel], dist)
            sbom_name, sbom_bytes = _make_sbom(dist / wheel, extras, epoch)
            (dist / sbom_name).write_bytes(sbom_bytes)
            sbom_products = intoto.record([sbom_name], dist)
            intoto.write_link(link_dir, "sbom", ["kedge-release", "sbom"], sbom_materials, sbom_products, signer)
            # -- image ------------------------------------------------------------------
            built: image.BuiltImage | None = None
            if with_image:
                lock, _lock_bytes = image.read_lock(src)
                image_materials = {**intoto.record([wheel], dist), **intoto.record([image.LOCK_PATH], src)}
                built = image.build_image(
                    (dist / wheel).read_bytes(), sha256_file(dist / wheel), lock,
                    cache_dir or image.default_cache_dir(), epoch=epoch, source=repository,
                    revision=full_commit, tool_version=__version__)
                (dist / built.name).write_bytes(built.image.archive)
                (dist / built.sbom_name).write_bytes(built.sbom)
                intoto.write_link(link_dir, "image", ["kedge-release", "image"], image_materials,
                                  intoto.record([built.name, built.sbom_name], dist), signer)
            (link_dir / intoto.FUNCTIONARY_PUB).write_bytes(functionary.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

            # -- sums and provenance ----------------------------------------------------
            digests = {}
            names = [wheel, sdist, sbom_name] + ([built.name, built.sbom_name] if built else [])
            for name in names:
                shutil.copyfile(dist / name, stage / name)
                digests[name] = sha256_file(stage / name)
            (stage / sums.SUMS_NAME).write_bytes(sums.format_sums(digests))
            facts = provenance.BuildFacts(
                repository=repository,
                ref=ref,
                commit=full_commit,
                workflow_path=workflow_path or gh.get("workflow_path", DEFAULT_WORKFLOW_PATH),
                builder_id=builder_id or provenance.LOCAL_BUILDER_ID,
                invocation_id=invocation_id or gh.get("invocation_id") or f"urn:uuid:{uuid.uuid4()}",
                source_date_epoch=epoch,
                started_on=started,
                finished_on=max(now(), started),
                tools=(("hatchling", _version_of("hatchling")), ("kedge", __version__)),
                internal=(("python", platform.python_version()),
                          ("targets", "sdist,wheel,oci-image" if built else "sdist,wheel"),
                          ("sbomFormat", "CycloneDX-" + sbom.SPEC_VERSION)),
            )
            for name, digest in digests.items():
                subjects = [provenance.Subject(name, digest)]
                stmt_facts, deps = facts, ()
                if built is not None and name == built.name:
                    # Images are referenced by manifest digest: `kedge verify sha256:<manifest>` works too.
                    subjects.append(provenance.Subject(image.IMAGE_NAME, built.image.manifest_digest[7:]))
                    stmt_facts = dataclasses.replace(facts, internal=facts.internal + (
                        ("imageLock", image.LOCK_PATH),
                        ("gzip", f"level {oci.GZIP_LEVEL}, zlib {zlib.ZLIB_RUNTIME_VERSION}"),
                    ))
                    deps = image.resolved_dependencies(built.inputs)
                stmt = provenance.make_statement(subjects, stmt_facts, dependencies=deps)
                (stage / f"{name}.intoto.json").write_bytes(provenance.dump(stmt))
            _swap_into_place(stage, out_dir, prepared)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return BuildResult(out_dir, wheel, sdist, sbom_name, digests, facts, warnings,
                       image=built.name if built else None, image_sbom=built.sbom_name if built else None,
                       manifest_digest=built.image.manifest_digest if built else None)


def _backend_pin_warnings(pyproject: Path) -> tuple[str, ...]:
    """Say so when the installed hatchling is not the one ``build-system`` pins.

    The bytes of a wheel depend on the backend version; a build with another one is
    still reproducible on its own but will not match a build made with the pin.
    """
    import tomllib

    try:
        requires = tomllib.loads(pyproject.read_text("utf-8"))["build-system"]["requires"]
    except (OSError, ValueError, KeyError, TypeError):
        return ("pyproject.toml has no readable build-system.requires",)
    installed = _version_of("hatchling")
    for req in requires if isinstance(requires, list) else []:
        m = re.fullmatch(r"\s*hatchling\s*==\s*([\w.]+)\s*", str(req))
        if m and m.group(1) != installed:
            return (f"build-system pins hatchling=={m.group(1)} but {installed} is installed; "
                    "artifacts will not match a build made with the pinned backend",)
    return ()


def _swap_into_place(stage: Path, out_dir: Path, previous: Path | None) -> None:
    if previous is None:
        os.replace(stage, out_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.resolve().parent))
    os.replace(out_dir, trash / "old")
    os.replace(stage, out_dir)
    shutil.rmtree(trash, ignore_errors=True)


def _version_of(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as exc:
        raise StateError(f"{dist} is not installed", code="missing_build_tool") from exc


def _run_hatchling(src: Path, dist: Path, epoch: int) -> None:
    argv = [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-t", "wheel", "-d", str(dist)]
    try:
        done = subprocess.run(  # nosec B603 - fixed argv, our own interpreter
            argv, cwd=src, env=_build_env(epoch), capture_output=True, timeout=BUILD_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StateError("hatchling did not run", code="build_failed") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-1000:]
        raise StateError(f"hatchling build failed: {detail}", code="build_failed")


def _artifacts(dist: Path) -> tuple[str, str]:
    names = sorted(p.name for p in dist.iterdir())
    wheels = [n for n in names if n.endswith(".whl")]
    sdists = [n for n in names if n.endswith(".tar.gz")]
    if len(wheels) != 1 or len(sdists) != 1 or len(names) != 2:
        raise StateError(f"expected one wheel and one sdist, got {names}", code="build_failed")
    for name in names:
        sums.check_name(name)
    return wheels[0], sdists[0]


def _make_sbom(wheel: Path, extras: tuple[str, ...], epoch: int) -> tuple[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        meta_names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(meta_names) != 1:
            raise StateError("wheel has no single METADATA", code="bad_wheel")
        info = zf.getinfo(meta_names[0])
        if info.file_size > MAX_METADATA_BYTES:
            raise StateError("wheel METADATA too large", code="bad_wheel")
        text = zf.read(info).decode("utf-8")
    name, version, requires, provided = sbom.wheel_metadata(text)
    unknown = [e for e in extras if e not in provided]
    if unknown:
        raise ConfigError(f"wheel provides no extra(s) {unknown}", code="bad_extra")
    _direct, components = sbom.resolve_runtime(requires, extras)
    root = sbom.Component(name=name, version=version, depends_on=_direct)
    doc = sbom.make_bom(root, sha256_file(wheel), components, timestamp=epoch, tool_version=__version__)
    return f"{sbom.canonical_name(name).replace('-', '_')}-{version}.cdx.json", sbom.dump(doc)
