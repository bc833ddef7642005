"""The documentation runs: the README's Python examples execute, and every ``capslab ...``
command line in the README and docs/ names a real command with options it really has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from capslab.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def command_lines(path: Path) -> list[str]:
    lines = []
    for block in code_blocks(path, "bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("capslab ") or line.startswith(".venv/bin/capslab "):
                lines.append(line.removeprefix(".venv/bin/"))
    return lines


def test_readme_python_examples_run(mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(ROOT / "README.md", "python")
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "api" / "summary.json").exists()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_exist_with_their_options(doc):
    root = typer.main.get_command(app)
    problems = []
    for line in command_lines(doc):
        words = shlex.split(line.replace("...", ""))[1:]
        command, path = root, ["capslab"]
        options = {o for p in root.params for o in (*p.opts, *p.secondary_opts)}
        while words and hasattr(command, "commands") and not words[0].startswith("-"):
            if words[0] not in command.commands:
                problems.append(f"`{line}`: no command {' '.join(path)} {words[0]}")
                break
            command = command.commands[words.pop(0)]
            path.append(command.name)
            options |= {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        unknown = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in options]
        if unknown:
            problems.append(f"`{line[:60]}...`: {' '.join(path)} has no option(s) {', '.join(unknown)}")
    assert problems == [], f"{doc.name}:\n" + "\n".join(problems)
