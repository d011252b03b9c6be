"""The README works as written: its Python snippets run, its commands exist, its links resolve.

The Python blocks of README.md run as they are (on the bundled digits; a block that reads
``../shared/data`` skips when that folder is absent). Every ``fedcl ...`` line in the ```bash
blocks of README.md and docs/*.md names a real command, only flags that command takes and only
keys its structured config has (checked against ``fedcl.cli.COMMANDS`` and
``fedcl.confighelp.config_keys``; nothing is run). Every relative link and anchor resolves.
"""

from __future__ import annotations

import io
import re
import shlex
import tokenize
from pathlib import Path

import pytest

from fedcl.cli import COMMANDS, _resolve
from fedcl.confighelp import config_keys

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
_FENCE = re.compile(r"^```(\w*)\s*\n(.*?)^```\s*$", re.M | re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_SHARED = "../shared/data"
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _blocks(path: Path, lang: str) -> list[str]:
    return [body for tag, body in _FENCE.findall(path.read_text()) if tag == lang]


def _strings(code: str) -> list[str]:
    """The string literals of ``code`` (so a path named in a comment does not count)."""
    return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.STRING]


PY_BLOCKS = _blocks(README, "python")


def test_readme_has_python_snippets() -> None:
    assert PY_BLOCKS, "the README's Python API example is a ```python block"


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_readme_python_snippet_runs(index: int, tmp_path, monkeypatch, request) -> None:
    code = PY_BLOCKS[index]
    if any(_SHARED in s for s in _strings(code)):
        # skips with a clear reason when MNIST is absent from ../shared/data and $FEDCL_DATA
        code = code.replace(_SHARED, request.getfixturevalue("mnist_data_root"))
    monkeypatch.chdir(tmp_path)  # files the snippet writes land here
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__main__"})


# ---- commands in ```bash blocks ---------------------------------------------------------------


def _command_lines(path: Path) -> list[list[str]]:
    """Every ``fedcl ...`` invocation in the file's bash blocks, as words (continuations joined)."""
    found = []
    for body in _blocks(path, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            segment: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", "||", ";", "|"):
                    while segment and _ENV.match(segment[0]):  # FEDCL_PROGRESS=0 fedcl ...
                        segment.pop(0)
                    if segment and Path(segment[0]).name == "fedcl":
                        found.append(segment)
                    segment = []
                else:
                    segment.append(word)
    return found


def _problems(words: list[str]) -> list[str]:
    """What is wrong with one ``fedcl ...`` invocation (an empty list when it is valid)."""
    if len(words) < 2:
        return ["no command"]
    name, rest = words[1], words[2:]
    if name in ("-h", "--help", "-V", "--version"):
        return []
    if name not in COMMANDS:
        return [f"unknown command {name!r}"]
    cmd = COMMANDS[name]
    keys = config_keys(_resolve(cmd.config))
    leaves = {k.key for k in keys}
    dicts = {k.key for k in keys if k.type.startswith("dict")}  # free-form: engine.outer_loop=...
    usages = " ".join(usage for usage, _ in cmd.args)
    flags = {"-h", "--help", "--show-config", "-v", "--verbose", *re.findall(r"--[\w-]+", usages)}
    takes_value = set(re.findall(r"(--[\w-]+) [A-Z]", usages))  # "[--model A,B]"
    positional = [u for u, _ in cmd.args if not u.startswith("[")]  # "PATH"
    problems, i = [], 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-"):
            if word not in flags:
                problems.append(f"{name} takes no flag {word}")
            i += 2 if word in takes_value else 1
            continue
        if "=" in word:
            key = word.split("=", 1)[0]
            if key not in leaves and not any(key.startswith(d + ".") for d in dicts):
                problems.append(f"{name} has no key {key!r}")
        elif word.endswith((".yaml", ".yml")):
            if not (REPO / word).is_file():
                problems.append(f"config file {word} does not exist")
        elif positional:
            positional.pop(0)
        else:
            problems.append(f"{name} takes no argument {word!r}")
        i += 1
    return problems


def test_readme_shows_every_command() -> None:
    shown = {words[1] for words in _command_lines(README)}
    assert set(COMMANDS) <= shown, f"commands without an example in the README: {sorted(set(COMMANDS) - shown)}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_documented_commands_are_valid(path: Path) -> None:
    lines = _command_lines(path)
    bad = {" ".join(words): p for words in lines if (p := _problems(words))}
    assert not bad, f"{path.name}: {bad}"


def test_the_command_check_catches_mistakes(tmp_path) -> None:
    """The checker itself: each kind of mistake is reported, a valid line is not."""
    assert _problems(["fedcl", "distill", "method=dsa", "ipc=1", "engine.outer_loop=5", "eval.epochs=3"]) == []
    assert _problems(["fedcl", "evaluate", "runs/x/synthetic.safetensors", "--model", "convnet,mlp"]) == []
    assert _problems(["fedcl", "distil"]) == ["unknown command 'distil'"]
    assert _problems(["fedcl", "distill", "ipcs=1"]) == ["distill has no key 'ipcs'"]
    assert _problems(["fedcl", "distill", "eval.epoch=1"]) == ["distill has no key 'eval.epoch'"]
    assert _problems(["fedcl", "distill", "--quick"]) == ["distill takes no flag --quick"]
    assert _problems(["fedcl", "distill", "configs/distill/nope.yaml"]) == [
        "config file configs/distill/nope.yaml does not exist"]
    assert _problems(["fedcl", "distill", "stray"]) == ["distill takes no argument 'stray'"]
    # commands are found after &&, behind a path and env settings, across continuations; not as arguments
    page = tmp_path / "x.md"
    page.write_text("```bash\nx && .venv/bin/fedcl quickstart  # c\nA=1 fedcl bench \\\n  --quick\necho fedcl\n```\n"
                    "fedcl prose\n```python\nfedcl = 1\n```\n")
    assert _command_lines(page) == [[".venv/bin/fedcl", "quickstart"], ["fedcl", "bench", "--quick"]]


# ---- links -----------------------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    text = _FENCE.sub("", path.read_text())
    heads = re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def _broken_links(path: Path) -> list[str]:
    """The relative links (and anchors) of a Markdown file that point nowhere; code blocks are not read."""
    text = _FENCE.sub("", path.read_text())
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    assert not _broken_links(path), f"{path.name}: broken links {_broken_links(path)}"


def test_the_link_check_catches_mistakes(tmp_path) -> None:
    (tmp_path / "b.md").write_text("# Part two\n")
    page = tmp_path / "a.md"
    page.write_text("# Top\n[ok](b.md) [ok](b.md#part-two) [ok](#top) [web](https://x.org/none)\n"
                    "[gone](c.md) [bad anchor](b.md#part-three) ![img](img/none.png) [self](#nowhere)\n"
                    "```bash\n[in code](d.md)\n```\n")
    assert _broken_links(page) == ["c.md", "b.md#part-three", "img/none.png", "#nowhere"]


def test_the_docs_pages_are_linked_from_the_readme() -> None:
    text = README.read_text()
    assert DOCS and all(f"docs/{p.name}" in text for p in DOCS), "every docs/ page is reachable from the README"
