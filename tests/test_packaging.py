"""`pip install .` gives a `cau` that carries its codec catalogue and dial plans and runs from anywhere."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    found = set()
    for top in ("gateway", "interop_tests"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    missing = found - listed
    assert not missing, f"packages missing from setup.cfg [options] packages: {sorted(missing)}"
    assert not (REPO / "codecs" / "__init__.py").exists(), "codecs/ must stay data only"


def test_wheel_installs_and_runs_from_another_directory(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("cau-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gateway/_data/codecs/g722.yaml" in names or any(n.startswith("gateway/_data/codecs/") and n.endswith(".yaml") for n in names)
    assert "gateway/_data/dialplans/default.yaml" in names
    assert "gateway/_data/dialplans/province.yaml" in names
    for page in ("join.html", "join.js", "join.css"):    # the join page browsers are served
        assert f"gateway/webrtc/static/{page}" in names, page
    for page in ("console.html", "console.js", "console.css", "vendor/uplot/uPlot.iife.min.js",
                 "vendor/uplot/LICENSE"):                  # the operator's console and its chart library
        assert f"gateway/api/static/{page}" in names, page
    # the suite's data: RFC 4475's messages, byte for byte
    torture = sorted(n for n in names if n.startswith("interop_tests/data/rfc4475/") and n.endswith(".dat"))
    assert len(torture) == 49, torture
    zf = zipfile.ZipFile(wheel)
    assert zf.read("interop_tests/data/rfc4475/wsinv.dat") == (REPO / "interop_tests/data/rfc4475/wsinv.dat").read_bytes()
    assert b"\r\n" in zf.read("interop_tests/data/rfc4475/wsinv.dat")

    # Install into a fresh venv that borrows the dependencies from this environment.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(py), "-c", "import gateway.resources as r, gateway.catalogue as c; "
                        "print(r.data_dir('codecs')); print(len(c.default_catalogue()))"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    where, count = r.stdout.split()
    assert str(venv) in where, "the installed catalogue must come from the installed package"
    assert int(count) >= 9
    r = subprocess.run(
        [str(venv / "bin" / "cau"), "dialplan", "check", str(Path(where).parent / "dialplans" / "default.yaml")],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    # a lab outside a checkout: the catalogue lists, and the suite finds its RFC 4475 messages
    r = subprocess.run([str(venv / "bin" / "cau"), "conformance", "--list", "--profile", "sip-ua"],
                       capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60)
    assert r.returncode == 0 and "TORT-001" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([str(py), "-c", "import interop_tests.sip.test_sip_gateway as t; print(t.SHARED, "
                        "len(list(t.SHARED.glob('*.dat'))))"], capture_output=True, text=True, cwd=elsewhere,
                       env=env, timeout=60)
    assert r.returncode == 0 and str(venv) in r.stdout and r.stdout.split()[-1] == "49", r.stdout + r.stderr
