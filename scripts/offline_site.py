"""Pack dsrl's Python dependencies into one folder for an offline machine that has its own Python and torch.

    python scripts/offline_site.py --out offline --python-version 3.12                     # Gym tasks, benchmark
    python scripts/offline_site.py --out offline --python-version 3.12 --group robomimic   # + Robomimic tasks
    python scripts/offline_site.py --out offline --dist cloudpickle --dist tqdm            # just these

and there, with this repository checked out (torch comes from that machine):

    mkdir -p /tmp/site && for g in core robomimic; do cat offline/$g.tar.xz.part* | tar xJ -C /tmp/site; done
    export PYTHONPATH=/tmp/site:$PWD   # the packed dependencies, and dsrl from the checkout (for scripts/)
    python train_dsrl.py ... wandb.mode=disabled video.every_evals=0

Every distribution is taken at the version installed here, so the offline
machine runs the combination this environment was tested with: a pure-Python
one is copied from this environment (its ``.dist-info`` included), one with
compiled extensions is downloaded as the target Python's manylinux wheel
(``pip download``, the only step that needs the network) and unpacked.
torch, its CUDA libraries, numpy and W&B are never packed: the target's own
torch and numpy are used (runs, Robomimic included, were checked with numpy
1.26 and 2.4), and runs there log to CSV and TensorBoard with ``wandb.mode=disabled``.
robosuite loses the robot, gripper and demonstration assets no Robomimic task
uses (~613 MB -> ~148 MB).

The folder is written as ``<group>.tar.xz`` split into parts of at most
``--part-mib`` MiB (for transfers with a size limit), with ``<group>.json``
listing the distributions, their versions and where each came from.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from dsrl.files import write_json

GROUPS = {
    "core": [
        "stable_baselines3",
        "gymnasium",
        "Farama-Notifications",
        "cloudpickle",
        "hydra-core",
        "omegaconf",
        "antlr4-python3-runtime",
        "PyYAML",
        "packaging",
        "setuptools",
        "mujoco",
        "glfw",
        "PyOpenGL",
        "absl-py",
        "tensorboard",
        "protobuf",
        "tqdm",
        "rich",
        "markdown-it-py",
        "mdurl",
        "pygments",
        "ImageIO",
        "pillow",
    ],
    "robomimic": ["robosuite", "robomimic", "termcolor"],
}
"""Distributions per group; ``robomimic`` is unpacked on top of ``core`` (a second archive). robosuite also
imports scipy, numba and OpenCV (``cv2``) when it loads: those are the target's, or pack them with ``--dist``
(their wheels are large: llvmlite ~40 MB, opencv-python-headless ~50 MB)."""

ROBOSUITE_ASSETS_KEPT = {
    "robosuite/models/assets/robots": {"panda"},
    "robosuite/models/assets/grippers/meshes": {"panda_gripper"},
}
ROBOSUITE_ASSETS_DROPPED = ("robosuite/models/assets/bullet_data", "robosuite/models/assets/demonstrations")


def is_compiled(dist: metadata.Distribution) -> bool:
    """Whether the distribution ships shared libraries (then the target Python needs its own wheel)."""
    return any(str(f).endswith(".so") or ".so." in str(f) for f in dist.files or [])


def copy_installed(dist: metadata.Distribution, site: str) -> None:
    """Copy the distribution's installed files (without bytecode and console scripts) into ``site``."""
    for file in dist.files or []:
        relative = str(file)
        if relative.startswith("..") or "__pycache__" in relative or relative.endswith(".pyc"):
            continue
        target = os.path.join(site, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(dist.locate_file(file), target)


def download_wheel(name: str, version: str, python_version: str, glibc: str, directory: str) -> str:
    """``pip download`` the target's binary wheel of ``name==version`` (x86-64 Linux, glibc ``glibc`` or older)."""
    before = set(os.listdir(directory))
    command = [sys.executable, "-m", "pip", "download", f"{name}=={version}", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp"]
    for platform in manylinux_tags(glibc):
        command += ["--platform", platform]
    command += ["--dest", directory, "--quiet"]
    subprocess.run(command, check=True)
    (wheel,) = set(os.listdir(directory)) - before
    return os.path.join(directory, wheel)


def manylinux_tags(glibc: str) -> list[str]:
    """The wheel platform tags a glibc ``major.minor`` x86-64 machine runs, newest first (pip does not expand them)."""
    major, minor = (int(v) for v in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
    return tags + [tag for m, tag in legacy.items() if m <= minor]


def strip_robosuite(site: str) -> None:
    """Delete the robosuite assets no Robomimic task loads (the Panda robot and gripper stay)."""
    for folder, kept in ROBOSUITE_ASSETS_KEPT.items():
        path = os.path.join(site, folder)
        for name in os.listdir(path):
            if name not in kept:
                shutil.rmtree(os.path.join(path, name))
    for folder in ROBOSUITE_ASSETS_DROPPED:
        shutil.rmtree(os.path.join(site, folder))


def pack(site: str, out: str, name: str, part_mib: int) -> list[str]:
    """``tar cJ`` the folder's contents and split the archive into parts, replacing an earlier packing's (whose extra
    parts ``cat <name>.tar.xz.part*`` would otherwise append); returns the parts' paths."""
    archive = os.path.join(out, f"{name}.tar.xz")
    for stale in glob.glob(f"{glob.escape(archive)}.part*"):
        os.remove(stale)
    subprocess.run(["tar", "-I", "xz -T0 -6", "-cf", archive, "-C", site, "."], check=True)
    parts, size = [], part_mib * 2**20
    with open(archive, "rb") as f:
        while chunk := f.read(size):
            parts.append(f"{archive}.part{len(parts):02d}")
            with open(parts[-1], "wb") as part:
                part.write(chunk)
    os.remove(archive)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the archive parts and the manifest")
    parser.add_argument("--group", choices=sorted(GROUPS), default="core", help="which distributions to pack")
    parser.add_argument("--dist", action="append", help="pack these distributions instead of a group's")
    parser.add_argument("--python-version", default="%d.%d" % sys.version_info[:2], help="the target's Python")
    parser.add_argument("--glibc", default="2.28", help="the target's glibc version (x86-64 Linux wheels)")
    parser.add_argument(
        "--part-mib", type=int, default=25, help="largest part of the archive, MiB (a transfer's limit)"
    )
    args = parser.parse_args()

    names = args.dist or GROUPS[args.group]
    name = "custom" if args.dist else args.group
    os.makedirs(args.out, exist_ok=True)
    manifest = {"python_version": args.python_version, "glibc": args.glibc, "distributions": {}}
    with tempfile.TemporaryDirectory() as work:
        site, wheels = os.path.join(work, "site"), os.path.join(work, "wheels")
        os.makedirs(site)
        os.makedirs(wheels)
        for dist_name in names:
            try:
                dist = metadata.distribution(dist_name)
            except metadata.PackageNotFoundError:
                raise SystemExit(f"--dist/--group: {dist_name!r} is not installed in this environment") from None
            if is_compiled(dist):
                wheel = download_wheel(dist_name, dist.version, args.python_version, args.glibc, wheels)
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(site)
                source = os.path.basename(wheel)
            else:
                copy_installed(dist, site)
                source = "copied from this environment"
            manifest["distributions"][dist_name] = {"version": dist.version, "source": source}
            print(f"{dist_name}=={dist.version}: {source}")
        if "robosuite" in names:
            strip_robosuite(site)
        manifest["parts"] = [os.path.basename(p) for p in pack(site, args.out, name, args.part_mib)]
    write_json(os.path.join(args.out, f"{name}.json"), manifest)
    print(f"{args.out}: {', '.join(manifest['parts'])}")


if __name__ == "__main__":
    main()
