"""``fcos-lab workshop --dir DIR``: a participant's workshop folder, notebooks and data, ready for JupyterLab.

The notebooks and the instructor guide are package data (``fcos_lab/workshop/notebooks``, the folder
``notebooks/workshop`` of the repository), so an installed package can make the folder. The synthetic data
is generated there (``DIR/synthetic``) with the demo preset's sizes; dotted overrides given to the command
are recorded in ``DIR/workshop.json`` and every notebook's :class:`~fcos_lab.workshop.session.Workshop`
applies them (a smaller dataset for a slow laptop, say), so notebooks and data agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fcos_lab.checkpoint import atomic_write_bytes, atomic_write_text
from fcos_lab.data.splits import build_datasets
from fcos_lab.demo import demo_config
from fcos_lab.errors import InputError

SETTINGS_FILE = "workshop.json"
GUIDE = "README.md"


def notebook_files() -> list[Path]:
    """The workshop notebooks shipped with the package, in order (``01-...`` to ``06-...``)."""
    folder = Path(str(resources.files("fcos_lab.workshop") / "notebooks"))
    return sorted(folder.glob("[0-9][0-9]-*.ipynb"))


def recorded_overrides(workshop_dir: str | Path) -> list[str]:
    """The overrides ``fcos-lab workshop`` recorded in ``workshop_dir/workshop.json`` (none without the file)."""
    path = Path(workshop_dir) / SETTINGS_FILE
    if not path.is_file():
        return []
    try:
        overrides = json.loads(path.read_text(encoding="utf-8")).get("overrides", [])
    except (OSError, ValueError, AttributeError) as error:
        raise InputError(f"{path}: not a workshop settings file ({error}); delete it or run fcos-lab workshop again") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise InputError(f"{path}: 'overrides' must be a list of KEY=VALUE strings, got {overrides!r}")
    return overrides


@dataclass(frozen=True)
class WorkshopFolder:
    """What :func:`make_workshop_folder` did.

    Attributes:
        root: the folder.
        written: notebooks (and the guide) copied; ``kept``: those already there and left as they were.
        data: the synthetic dataset's folder; ``num_train`` / ``num_val`` its images.
    """

    root: Path
    written: tuple[str, ...]
    kept: tuple[str, ...]
    data: Path
    num_train: int
    num_val: int


def make_workshop_folder(root: str | Path, overrides: Sequence[str] = (), *, force: bool = False) -> WorkshopFolder:
    """Copy the workshop notebooks and guide into ``root`` and generate the synthetic data there.

    A notebook already in ``root`` (a participant's work) is kept unless ``force``.

    Raises:
        InputError: ``root`` is a file.
        ConfigError: a bad override.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    config = demo_config(root, quick=False, overrides=list(overrides))  # validates the overrides first
    root.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for source in [*notebook_files(), notebook_files()[0].parent / GUIDE]:
        target = root / source.name
        if target.exists() and not force and source.name != GUIDE:
            kept.append(source.name)
            continue
        data = source.read_bytes()
        atomic_write_bytes(target, lambda handle, data=data: handle.write(data))
        written.append(source.name)
    atomic_write_text(root / SETTINGS_FILE, json.dumps({"overrides": list(overrides)}, indent=1) + "\n")
    train_set, val_set = build_datasets(config)
    return WorkshopFolder(root, tuple(written), tuple(kept), Path(config.data.synthetic_root),
                          len(train_set), len(val_set))


def instructions(folder: WorkshopFolder) -> str:
    """What the command prints: what is where, and how to open the notebooks in JupyterLab."""
    names = sorted(n for n in (*folder.written, *folder.kept) if n.endswith(".ipynb"))
    lines = [f"workshop folder ready: {folder.root}"]
    lines += [f"  {name}" + ("  (kept: already there; --force replaces it)" if name in folder.kept else "") for name in names]
    lines += [f"  {GUIDE}  (instructor guide: goals, timings, common wrong answers)",
              f"  synthetic data: {folder.data} ({folder.num_train} training, {folder.num_val} validation images)",
              "open the notebooks in JupyterLab:",
              f"  cd {folder.root} && jupyter lab {names[0] if names else ''}",
              f"(or: python -m jupyterlab --notebook-dir {folder.root})",
              ("run each notebook from the top; write each exercise in place of its `raise NotImplementedError`, "
               "then run the check below it.")]
    return "\n".join(lines)
