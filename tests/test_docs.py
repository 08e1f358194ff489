"""The documentation holds: its links resolve, its code runs, and the README's outputs are real.

The README's tour is run as written: its setup block writes the tiny models, each ``$ tensorguard
...`` line of its ``console`` blocks runs in that folder, and what the command prints must match
the lines shown under it (a line ``...`` stands for any number of lines, ``...`` inside a line for
any text: a temporary or installed path). Its ``pycon`` block runs as a doctest in the same folder.
"""

from __future__ import annotations

import doctest
import re
import shlex
import sys
from pathlib import Path

import pytest

from tensorguard.architectures import registry, schemes
from tensorguard.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(path: Path, language: str) -> list[str]:
    """The fenced code blocks of ``path`` in ``language``."""
    return [body for lang, body in _FENCE.findall(path.read_text()) if lang == language]


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in _LINK.findall(_FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked offline
            continue
        file, _, fragment = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists() or (fragment and fragment not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_links_every_docs_page():
    linked = {t.partition("#")[0] for t in _LINK.findall(README.read_text())}
    assert {f"docs/{p.name}" for p in PAGES[1:]} <= linked


def test_adding_an_architecture_example_registers():
    """The guide's example, run against the registry without its scheme, registers that scheme."""
    (example,) = [b for b in blocks(ROOT / "docs" / "architecture.md", "python") if "REGISTRY.register" in b]
    fresh = registry.Registry()
    for scheme in registry.REGISTRY.schemes.values():
        if scheme.name != "starcoder2":
            fresh.register(scheme)
    namespace = {**vars(schemes), "REGISTRY": fresh}
    try:
        exec(compile(example, "docs/architecture.md", "exec"), namespace)
    finally:
        registry.lookup.cache_clear()  # register() cleared it for the fresh registry
    assert fresh.schemes["starcoder2"] == namespace["STARCODER2"] == schemes.STARCODER2


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` fits ``expected``, where a line ``...`` is any lines, ``...`` any text."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    pattern = ".*".join(re.escape(part) for part in expected[0].split("..."))
    return bool(actual) and re.fullmatch(pattern, actual[0].rstrip()) is not None \
        and matches(expected[1:], actual[1:])


def tour_commands() -> list[tuple[str, list[str]]]:
    """Each ``$ tensorguard ...`` line of the README's console blocks and the lines shown after it."""
    commands: list[tuple[str, list[str]]] = []
    for body in blocks(README, "console"):
        for line in body.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
    return commands


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """A folder holding the README's tiny models (its setup block, run as written)."""
    folder = tmp_path_factory.mktemp("tour")
    (setup,) = [b for b in blocks(README, "python") if "synthetic.save_model" in b]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        exec(compile(setup, "README.md", "exec"), {})
    return folder


def test_readme_tour_prints_what_the_readme_shows(tour, run_cli, monkeypatch):
    monkeypatch.chdir(tour)
    monkeypatch.setenv("TENSORGUARD_CATALOGUE", str(tour / "default-catalogue.sqlite"))
    commands = tour_commands()
    assert [shlex.split(c)[1] for c, _ in commands] == [
        "inspect", "fingerprint", "compare", "compare", "index", "scan", "index", "cluster", "predict",
        "sensitivity", "demo"]
    for command, expected in commands:
        words = shlex.split(command)
        assert words[0] == "tensorguard"
        result = run_cli(*words[1:])
        assert result.code == (3 if "--policy" in words else 0), (command, result.err)
        shown = (result.out + result.err).rstrip("\n").splitlines()
        assert matches(expected, shown), f"$ {command}\n" + "\n".join(shown)


def test_readme_python_api_runs_as_shown(tour, monkeypatch):
    monkeypatch.chdir(tour)
    (session,) = blocks(README, "pycon")
    test = doctest.DocTestParser().get_doctest(session, {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=sys.stdout.write)
    assert runner.failures == 0 and runner.tries > 10


def test_cli_spells_errors_in_its_flags(run_cli, tour):
    """The README says the CLI reports bad input in one line, exit code 2."""
    result = run_cli("fingerprint", tour / "base.safetensors", "--samples", "0")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "--samples" in result.err


def test_no_page_describes_the_development_machine():
    words = re.compile(r"\b(here|this branch|previous run|local disk|this machine|development machine)\b",
                       re.IGNORECASE)
    texts = {p.name: _FENCE.sub("", p.read_text()) for p in PAGES}
    texts["Makefile"] = (ROOT / "Makefile").read_text()
    found = {name: words.findall(text) for name, text in texts.items()}
    assert not {name: hits for name, hits in found.items() if hits}


def test_help_texts_do_not_send_users_to_the_checkout(run_cli):
    """A pip user has no Makefile and no checkout: no help text names ``make``."""
    for name, command in cli.commands.items():
        text = run_cli(name, "--help").out
        assert "make " not in text, name
        for sub in getattr(command, "commands", {}):
            assert "make " not in run_cli(name, sub, "--help").out, (name, sub)
