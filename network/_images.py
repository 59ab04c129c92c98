"""Container images of a consortium's nodes, built here from local files with podman: no
registry is needed.

- ``peer`` and ``orderer``: FROM scratch, the installed Fabric binary (a ``go install``
  build needs only ``libc.so.6`` and ``ld-linux-x86-64.so.2``), and busybox-static as
  ``/bin/sh`` with the applets fedfabric's external builder calls (its POSIX-sh scripts
  are in the state directory each node mounts).
- ``chaincode``: the Python chaincode server, FROM scratch, a Debian rootfs with python3
  (``mmdebstrap`` from Debian's package mirror, kept between builds) and fedfabric's base
  install: no torch unless ``extras="[validation]"``.

One Containerfile per image (``network/images/``) also builds FROM an official image when a
registry is reachable (``--base hyperledger/fabric-peer:3.1.5``): the build context then
holds only what that image lacks. Builds are reproducible (``--timestamp 0``: the same
inputs give the same image id).

Example::

    built = build_image("peer", fabric_release(None), say=print)
    print(built.tag, built.size_mb)
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedfabric.network._binaries import FabricRelease
from fedfabric.network._errors import NetworkError

HERE = Path(__file__).resolve().parent
CONTAINERFILES = HERE / "images"
CONTAINERS_CONF = HERE / "images" / "containers.conf"
KINDS = ("peer", "orderer", "chaincode")
TAG = "3.0-snapshot"  # the pinned Fabric build's (the chaincode image: fedfabric's version)
LIBRARIES = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")
APPLETS = ("sh", "sed", "grep", "mkdir", "cp", "cat", "ls")  # the external builder's tools
APT = ("podman", "runc", "mmdebstrap", "busybox-static")
PACKAGES = ("chaincode", "gateway", "network", "fl_worker")  # the folders fedfabric installs
Say = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    kind: str
    tag: str
    image_id: str
    size_mb: float


def build_image(
    kind: str,
    release: FabricRelease,
    *,
    tag: str | None = None,
    base: str | None = None,
    extras: str = "",
    work: Path | None = None,
    say: Say | None = None,
) -> BuiltImage:
    """Build image `kind` (``peer``, ``orderer`` or ``chaincode``) as `tag` (default
    ``fedfabric-<kind>:<TAG>``; the chaincode image: ``:<fedfabric's version>``), FROM
    `base` (an official image) instead of scratch when given. `work`: where build contexts
    and the cached rootfs live. Raises `NetworkError` naming what is missing or failed."""
    if kind not in KINDS:
        raise NetworkError(f"no image {kind!r}: the images are {', '.join(KINDS)}")
    say = say or (lambda _: None)
    work = work or Path.home() / ".cache" / "fedfabric" / "images"
    default = tag is None
    tag = tag or default_tag(kind, release)
    context = work / kind
    shutil.rmtree(context, ignore_errors=True)
    (context / "root").mkdir(parents=True)
    if kind == "chaincode":
        _chaincode_context(context, work, extras, base, say)
    else:
        _node_context(context / "root", release, kind, base)
    args = ["--build-arg", f"BASE={base}"] if base else []
    say(f"podman build {tag}")
    podman(
        "build", "--quiet", "--timestamp", "0", *args,
        "-f", str(CONTAINERFILES / f"Containerfile.{kind}"), "-t", tag, str(context),
    )  # fmt: skip
    if default:  # the images a source change left behind
        name = tag.rsplit(":", 1)[0]
        for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}", name).split():
            if old.removeprefix("localhost/") != tag:
                subprocess.run(["podman", "rmi", old], capture_output=True, env=podman_env())
    # An image a rebuild under the same tag left untagged (only ours, by their label).
    podman("image", "prune", "--force", "--filter", f"label=fedfabric.image={kind}")
    image_id = podman("image", "inspect", "--format", "{{.Id}}", tag).strip()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag))
    built = BuiltImage(kind, tag, image_id, round(size / 1e6, 1))
    say(f"built {tag}: {built.size_mb} MB, id {image_id[:12]}")
    return built


def install_tools(say: Say) -> None:
    """apt-get install what building and running the images needs, when it is missing."""
    missing = [p for p in APT if not _installed(p)]
    if not missing:
        return
    say(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise NetworkError(f"apt-get install {' '.join(missing)} failed: {done.stderr}")


def _installed(package: str) -> bool:
    tool = {"busybox-static": "/bin/busybox"}.get(package, package)
    return shutil.which(tool) is not None


def _node_context(root: Path, release: FabricRelease, kind: str, base: str | None) -> None:
    """The files a peer or orderer image adds to its base (scratch: everything)."""
    binary = Path(release.tool(kind))
    if not binary.is_file():
        raise NetworkError(f"no {kind} binary in {release.home}/bin: install Fabric first")
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)  # mkdir's mode is masked by the umask
    if base:  # the official image has the binary, its libraries and a shell
        return
    for target in ("usr/local/bin", "bin", "etc"):
        (root / target).mkdir(parents=True)
    shutil.copy2(binary, root / "usr/local/bin" / kind)
    for library in LIBRARIES:
        found = Path(library)
        if not found.exists():
            raise NetworkError(f"{library} is missing: the {kind} image needs it")
        (root / found.parent.relative_to("/")).mkdir(parents=True, exist_ok=True)
        shutil.copy2(found.resolve(), root / found.relative_to("/"))
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise NetworkError("busybox-static is missing (apt-get install busybox-static)")
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")


def _chaincode_context(context: Path, work: Path, extras: str, base: str | None, say: Say) -> None:
    """A Debian rootfs with python3 (unless `base` has one) and fedfabric's base install
    (with `extras`) for that python, as binary wheels."""
    if base is None:
        rootfs = work / "debian-python.tar"
        if not rootfs.is_file():
            say("Debian rootfs with python3 (mmdebstrap, about half a minute)")
            partial = rootfs.with_suffix(".partial")
            _run(
                ["mmdebstrap", "--quiet", "--variant=essential", "--format=tar",
                 "--include=python3-minimal,libpython3.11-stdlib,libstdc++6",
                 "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
                 "bookworm", str(partial)],
            )  # fmt: skip
            partial.replace(rootfs)
        os.link(rootfs, context / "rootfs.tar")
    else:
        _tar_of_nothing(context / "rootfs.tar")
    source = HERE.parent
    if not (source / "pyproject.toml").is_file():
        raise NetworkError(
            "the chaincode image is built from a fedfabric source checkout (pyproject.toml "
            f"next to network/); {source} is an installed copy"
        )
    say(f"fedfabric{extras} for the image's python 3.11 (binary wheels)")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    wheels = context / "wheels"
    # The wheel's zip times from SOURCE_DATE_EPOCH: the same sources give the same wheel,
    # whose hash the install records (so the same image id).
    reproducible = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}  # 1980, zip's first
    _run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
         env=reproducible)  # fmt: skip
    (wheel,) = glob.glob(str(wheels / "*.whl"))
    _run(
        [*pip, "install", "--quiet", "--no-compile", "--target", str(context / "site"),
         "--python-version", "3.11", "--implementation", "cp",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux2014_x86_64", "--only-binary=:all:", f"{wheel}{extras}"],
    )  # fmt: skip
    shutil.rmtree(wheels)


def default_tag(kind: str, release: FabricRelease) -> str:
    """The tag `build_image` gives image `kind` by default, and the container backend runs:
    named by what it holds, so a changed input is a new image, never a stale one. Peer and
    orderer: the pinned build's name and the binary's digest; chaincode: fedfabric's version
    and a digest of its sources."""
    if kind == "chaincode":
        from importlib.metadata import version

        root = HERE.parent
        files = [f for f in (root / "pyproject.toml", root / "README.md") if f.is_file()]
        files += sorted(
            p
            for package in PACKAGES
            for p in (root / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(HERE.parent)).encode() + b"\0" + path.read_bytes())
        return f"fedfabric-chaincode:{version('fedfabric')}-{digest.hexdigest()[:12]}"
    binary = Path(release.tool(kind))
    found = hashlib.sha256(binary.read_bytes()).hexdigest()[:12] if binary.is_file() else "none"
    return f"fedfabric-{kind}:{TAG}-{found}"


def _tar_of_nothing(path: Path) -> None:
    import tarfile

    with tarfile.open(path, "w"):
        pass


def podman_env() -> dict[str, str]:
    """This process's environment for podman, with `CONTAINERS_CONF` unless one is set."""
    return {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
    }


def podman(*args: str) -> str:
    """Run ``podman ARGS``; its output. Raises `NetworkError` with podman's message."""
    try:
        return _run(["podman", *args], env=podman_env())
    except NetworkError as exc:
        if "no cgroup mount" in str(exc):  # /sys remounted, e.g. by `ip netns exec`
            raise NetworkError(
                f"{exc}; runc needs the cgroup mounts under /sys/fs/cgroup: in a network "
                "namespace, run under `nsenter --net=/run/netns/NAME`, not `ip netns exec`"
            ) from exc
        raise


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise NetworkError(f"{argv[0]} {argv[1]} failed ({done.returncode}): {' | '.join(tail)}")
    return done.stdout


__all__ = ["KINDS", "BuiltImage", "build_image", "default_tag", "install_tools", "podman"]
