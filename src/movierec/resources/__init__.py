"""Files shipped inside the package, found through importlib.resources (so a wheel installed anywhere
finds them, whatever the working directory): the shipped configs (`configs/`: experiment and data
YAMLs; the checkout's top-level `configs` points here), model architecture configs (`models/`) and
DeepSpeed presets (`deepspeed/`)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped(*parts: str) -> Path:
    """The path of a shipped file or folder, e.g. shipped("configs", "data", "demo.yaml")."""
    root = files("movierec")
    return Path(str(root.joinpath(*parts)))


def config_path(path: str | Path) -> Path:
    """`path` as given when it exists; else, for `configs/X.yaml` (the checkout's path of a shipped config),
    the packaged copy, so the README's commands also run from a wheel installed elsewhere."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    parts = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    packaged = shipped("configs", *parts)
    return packaged if parts and packaged.is_file() else given
