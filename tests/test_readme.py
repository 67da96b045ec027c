"""The README's first screen shows the two commands, and CI runs the test command verbatim."""

import re
from pathlib import Path

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
