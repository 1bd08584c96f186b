"""The artifact users install: the wheel, installed without -e into a fresh virtualenv outside the repository.

The editable install the Makefile makes hid a missing sub-package once (streams.falls was not in
the wheel), so this test builds the wheel and imports every module from it.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("streams", "models", "schemas")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what git tracks or would add, so a stale build/ or an ignored file in
    # the checkout cannot reach the wheel; --no-build-isolation: setuptools from this environment.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("vigil-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed by pip (no -e, no index); its dependencies come from this
    environment through a .pth line, which adds the directory to sys.path without running the editable
    install's import hooks, so vigil itself can only come from the wheel."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz-vigil-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


def run_in(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(args), cwd=env_dir, env=clean, capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_every_package_of_the_tree_under_one_name(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("vigil-")}
    assert top == {"vigil"}  # nothing generic (models, schemas, streams) lands in site-packages
    expected = {f"vigil/{p.relative_to(REPO).as_posix()}" for folder in FOLDERS for p in (REPO / folder).rglob("__init__.py")}
    assert expected <= set(names), sorted(expected - set(names))
    schemas = {f"vigil/{p.relative_to(REPO).as_posix()}" for p in (REPO / "schemas").rglob("*.avsc")}
    assert schemas and schemas <= set(names)
    assert "vigil/schemas/manifest.json" in names


def test_every_module_imports_from_the_installed_wheel(installed: Path):
    script = (
        "import importlib, pkgutil, vigil, vigil.models, vigil.schemas, vigil.streams\n"
        "assert 'site-packages' in vigil.__file__, vigil.__file__\n"
        "names = [m.name for p in (vigil.models, vigil.schemas, vigil.streams) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "from vigil.schemas import SCHEMA_DIR\n"
        "assert (SCHEMA_DIR / 'manifest.json').is_file()\n"
        "print(len(names))\n"
    )
    out = run_in(installed, str(installed / "bin" / "python"), "-c", script)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) >= 60


def test_the_console_script_runs_from_the_installed_wheel(installed: Path):
    for args in (["--help"], ["worker", "--help"], ["train", "--help"]):
        out = run_in(installed, str(installed / "bin" / "vigil"), *args)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "usage: vigil" in out.stdout
