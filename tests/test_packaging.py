"""The wheel: ``aiocoord`` is its only top-level name (the commands, ``services/`` in the
repository, install as ``aiocoord._cli``), and the installed ``aiocoord`` command runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import build_wheel


def test_the_wheel_installs_only_the_aiocoord_top_level_name(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        tops = {name.split("/")[0] for name in names}
        assert tops == {"aiocoord", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                        + ".dist-info"}  # fmt: skip
        assert "aiocoord/_cli/reaper.py" in names  # elect runs it by its file
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "aiocoord = aiocoord._cli.cli:main" in archive.read(entry).decode()
        archive.extractall(tmp_path / "site")
    # run from the unpacked wheel, away from the repository (whose services/ is not importable)
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    helped = subprocess.run(
        [sys.executable, "-c", "import sys; from aiocoord._cli.cli import main; sys.exit(main())",
         "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "elect" in helped.stdout and "agent" in helped.stdout
    services = subprocess.run(
        [sys.executable, "-c", "import services"], cwd=tmp_path, env=env, capture_output=True
    )
    assert services.returncode != 0  # no top-level "services" came with it
