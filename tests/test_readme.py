"""The README is the front door: its example runs (twice, in an empty folder) and its two
Quick start commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README text under ``## title``, up to the next heading of that level."""
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the ```language blocks in ``text``."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    (block,) = fenced(section("Quick start"), "bash")
    first, second = block.strip().splitlines()
    assert "python3 -m venv .venv" in first and "evstore demo" in first
    assert "pip install -e ." in first and "[test]" not in first  # the main job's needs only
    assert second.startswith(". .venv/bin/activate && ") and 'pip install -e ".[test]"' in second
    assert "python -m pytest" in second
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert second in ci


def test_the_example_runs_twice_in_an_empty_folder(tmp_path: Path) -> None:
    (example,) = fenced(section("Example"), "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVSTORE_", "MLFLOW_"))}
    for attempt in (1, 2):
        done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, f"run {attempt}:\n{done.stderr}"
        assert done.stdout.count("adam") == attempt  # one row per run so far
    assert (tmp_path / "evstore.db").exists()


def test_the_postgres_role_sql_is_the_sql_evstore_init_prints() -> None:
    from evstore.stores import postgres
    from evstore.stores.postgres import least_privilege_sql

    def statements(text: str) -> list[str]:
        return [" ".join(s.split()) for s in text.replace('"', "").split(";") if s.strip()]

    printed = [s.replace("public.", "") for s in statements(";".join(least_privilege_sql("evstore_app", "evstore")))]
    (readme,) = fenced(section("Guarantees").split("### PostgreSQL", 1)[1], "sql")
    docstring = (postgres.__doc__ or "").split("::", 1)[1].split("\n\n")[1]
    assert statements(readme) == printed
    assert statements(docstring) == printed
