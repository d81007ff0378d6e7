"""scripts/offline_wheels.sh ships the versions tested here, and they satisfy one another (no download)."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, requires, version

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# What the GPU machine runs: Python 3.12 on x86_64 Linux, no extras.
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.0", "extra": ""}


def shipped() -> dict[str, str]:
    text = (ROOT / "scripts/offline_wheels.sh").read_text(encoding="utf-8")
    block = re.search(r"^WHEELS=\((.*?)^\)", text, re.DOTALL | re.MULTILINE).group(1)
    pins = re.findall(r"^\s*([A-Za-z0-9_.-]+)==(\S+)\s*$", block, re.MULTILINE)
    names = [canonicalize_name(n) for n, _ in pins]
    assert len(names) == len(set(names)), f"a package listed twice: {names}"
    return {canonicalize_name(n): v for n, v in pins}


def test_the_wheels_are_pyproject_pins():
    wheels = shipped()
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    for req in deps:
        name = canonicalize_name(req.name)
        if any(s.operator == "==" for s in req.specifier) and name not in {"torch", "torchvision", "torchaudio"}:
            assert name in wheels, f"{req} is pinned in pyproject.toml but not shipped"
        if name in wheels:
            assert req.specifier.contains(wheels[name]), f"shipped {name}=={wheels[name]} but pyproject.toml has {req}"


def test_the_wheels_satisfy_each_others_requirements():
    """Each shipped package's declared needs on another shipped one hold (read from its installed metadata)."""
    wheels = shipped()
    checked = 0
    for name, ver in wheels.items():
        try:
            if version(name) != ver:
                continue  # a different version is installed here: its metadata says nothing about the shipped one
        except PackageNotFoundError:
            continue
        for line in requires(name) or []:
            req = Requirement(line)
            if canonicalize_name(req.name) in wheels and (req.marker is None or req.marker.evaluate(TARGET_ENV)):
                assert req.specifier.contains(wheels[canonicalize_name(req.name)], prereleases=True), \
                    f"{name}=={ver} requires {req}, the script ships {req.name}=={wheels[canonicalize_name(req.name)]}"
                checked += 1
    assert checked >= 10  # llamafactory, transformers, datasets, trl... are pinned in pyproject.toml, so installed
