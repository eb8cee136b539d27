"""``fcos-lab workshop --dir DIR``: notebooks, guide and data in a folder; a participant's work kept; errors in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from fcos_lab.cli import main
from fcos_lab.workshop.folder import notebook_files
from fcos_lab.workshop.session import Workshop
from tests.conftest import REPO
from tests.workshop.conftest import SMALL_DATA


def test_the_command_makes_a_workshop_folder(tmp_path, capsys):
    folder = tmp_path / "ws"
    assert main(["workshop", "--dir", str(folder), *SMALL_DATA]) == 0
    out = capsys.readouterr().out
    names = [p.name for p in notebook_files()]
    assert out.startswith(f"workshop folder ready: {folder}")
    assert f"cd {folder} && jupyter lab {names[0]}" in out and "(8 training, 8 validation images)" in out
    for name in [*names, "README.md"]:
        assert (folder / name).read_bytes() == (REPO / "notebooks" / "workshop" / name).read_bytes()
    assert json.loads((folder / "workshop.json").read_text()) == {"overrides": SMALL_DATA}
    assert (folder / "synthetic" / "annotations" / "instances_val.json").is_file()
    # Every notebook's Workshop applies the recorded overrides: the data it finds is the data made here.
    ws = Workshop(folder)
    assert ws.config.data.synthetic_num_val == 8 and len(ws.val_set) == 8


def test_a_participants_notebook_is_kept_unless_forced(tmp_path, capsys):
    folder = tmp_path / "ws"
    main(["workshop", "--dir", str(folder), *SMALL_DATA])
    first = notebook_files()[0].name
    (folder / first).write_text("my work")
    assert main(["workshop", "--dir", str(folder), *SMALL_DATA]) == 0
    assert (folder / first).read_text() == "my work"
    assert f"{first}  (kept: already there; --force replaces it)" in capsys.readouterr().out
    assert main(["workshop", "--dir", str(folder), "--force", *SMALL_DATA]) == 0
    assert (folder / first).read_bytes() == notebook_files()[0].read_bytes()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["workshop", "--dir", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"fcos-lab workshop: error: {afile}: exists and is not a folder"
    assert main(["workshop", "--dir", str(tmp_path / "ws"), "train.nonsense=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nonsense" in err and not (tmp_path / "ws").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "workshop.json").write_text("{not json")
    with pytest.raises(Exception, match="not a workshop settings file"):
        Workshop(tmp_path / "bad")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_installed_package_carries_the_notebooks(tmp_path):
    """The wheel holds the notebooks and the guide (package data through fcos_lab/workshop/notebooks)."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("fcos_lab-*.whl")
    listed = set(zipfile.ZipFile(wheel).namelist())
    for path in notebook_files():
        assert f"fcos_lab/workshop/notebooks/{path.name}" in listed
    assert "fcos_lab/workshop/notebooks/README.md" in listed
