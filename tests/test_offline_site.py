"""scripts/offline_site.py: pure-Python distributions packed from this environment import from the unpacked folder."""

import json
import os
import subprocess
import sys
import tarfile

from dsrl.config import REPO_ROOT

OFFLINE_SITE = str(REPO_ROOT / "scripts" / "offline_site.py")


def test_packed_distributions_import_from_the_unpacked_folder_with_their_versions(tmp_path):
    out, site = tmp_path / "out", tmp_path / "site"
    out.mkdir()
    (out / "custom.tar.xz.part09").write_bytes(b"an earlier packing's last part")
    command = [sys.executable, OFFLINE_SITE, "--out", str(out), "--dist", "cloudpickle", "--dist", "tqdm"]
    subprocess.run(command + ["--part-mib", "1"], check=True, capture_output=True)
    manifest = json.loads((out / "custom.json").read_text())
    assert set(manifest["distributions"]) == {"cloudpickle", "tqdm"}
    assert all(d["source"] == "copied from this environment" for d in manifest["distributions"].values())
    parts = sorted(out.glob("custom.tar.xz.part*"))
    assert [p.name for p in parts] == manifest["parts"] and all(p.stat().st_size <= 2**20 for p in parts)
    archive = tmp_path / "custom.tar.xz"
    archive.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(archive) as tar:
        tar.extractall(site, filter="data")
    assert not list(site.rglob("__pycache__")), "no bytecode of this Python"

    probe = "import cloudpickle, tqdm, importlib.metadata as m; print(cloudpickle.__file__, m.version('tqdm'))"
    env = dict(os.environ, PYTHONPATH=str(site))
    printed = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True)
    path, version = printed.stdout.split()
    assert path.startswith(str(site)) and version == manifest["distributions"]["tqdm"]["version"]


def test_an_unknown_distribution_is_refused_by_name(tmp_path):
    command = [sys.executable, OFFLINE_SITE, "--out", str(tmp_path), "--dist", "no-such-dist"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "'no-such-dist' is not installed in this environment" in result.stderr
