"""The README's first screen, the test command CI runs verbatim, and a layout that is the tree."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def commands(readme: str) -> list[str]:
    return re.findall(r"```bash\n#[^\n]*\n([^\n]+)\n```", readme)


def test_first_screen_has_the_main_job_and_the_test_command():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    main_job, tests = commands(first_screen)[:2]
    # the main job dreams with the model shipped in the package: offline, in seconds, on the
    # lean install (no torch)
    assert "torch" not in main_job and "train" not in main_job and "wmsim dream" in main_job
    assert tests.startswith("pip install torch==2.13.0 && ") and tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    tests = commands((ROOT / "README.md").read_text())[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"\n{tests} || status=$?\n" in ci
    assert "python3 -m venv" in ci  # a fresh environment, not whatever is installed


def test_readme_pictures_exist():
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / picture).is_file(), picture


LAYOUT_HEADING = "## Layout"
DESCRIPTION_COLUMN = 18  # a layout line names a path before this column and describes it after


def layout_block(readme: str) -> str:
    """The code block under the README's layout heading."""
    after = readme.split(f"\n{LAYOUT_HEADING}\n", 1)[1]
    return re.search(r"```\n(.*?)```", after, re.S).group(1)


def named_paths(block: str) -> list[str]:
    """The paths a layout block names: top-level ones, and indented ones under the last folder."""
    paths: list[str] = []
    top = ""
    for line in block.splitlines():
        if not line[:DESCRIPTION_COLUMN].strip():
            continue  # a description's continuation
        name = line.split()[0]
        if line.startswith(" "):
            paths.append(top + name)
        else:
            top = name if name.endswith("/") else ""
            paths.append(name)
    return paths


def layout_problems(block: str, root: Path, folders: set[str]) -> list[str]:
    """What a layout block gets wrong about the tree at ``root``, given the ``folders`` that matter.

    A named path must exist (a folder where it ends with ``/``); every folder that matters is named.
    """
    problems = []
    named = named_paths(block)
    for path in named:
        place = root / path
        exists = place.is_dir() if path.endswith("/") else place.exists()
        if not exists:
            problems.append(f"{path} is named but not in the tree")
    for folder in sorted(folders):
        if f"{folder}/" not in named:
            problems.append(f"{folder}/ is in the tree but not named")
    return problems


def folders_that_matter(root: Path) -> set[str]:
    """Every top-level folder git tracks, and every folder of the wmsim package."""
    listing = ["git", "ls-files"]
    tracked = subprocess.run(listing, cwd=root, capture_output=True, text=True, check=True)
    parts = [Path(line).parts for line in tracked.stdout.splitlines()]
    top = {p[0] for p in parts if len(p) > 1}
    package = {f"wmsim/{p[1]}" for p in parts if len(p) > 2 and p[0] == "wmsim"}
    return (top | package) - {".ci"}  # .ci holds one file, which the block names


def test_readme_layout_is_the_tree():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which folders are tracked")
    block = layout_block((ROOT / "README.md").read_text())
    assert layout_problems(block, ROOT, folders_that_matter(ROOT)) == []


def test_the_layout_check_finds_a_stale_line_and_a_missing_folder(tmp_path):
    for folder in ("wmsim/model", "wmsim/replay", "tests"):
        (tmp_path / folder).mkdir(parents=True)
    block = (
        "wmsim/            the library\n"
        "  model/          world models\n"
        "  gone/           moved away long ago\n"
        "                  a description that only goes on\n"
        "tests/            mirrors the tree\n"
    )
    folders = {"wmsim", "wmsim/model", "wmsim/replay", "tests"}
    assert layout_problems(block, tmp_path, folders) == [
        "wmsim/gone/ is named but not in the tree",
        "wmsim/replay/ is in the tree but not named",
    ]
