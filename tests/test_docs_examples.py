"""The examples in README.md and docs/*.md hold: every fenced ```yaml block loads, every
dataset spec among them validates, and every `robolake <command> ...` line in a
```bash / ```sh / ```console block names a command that exists, with only flags that the
command's `--help` lists (`convert`, `mix` and `edit` also take Beam's pipeline options,
as pipelines/beam_options.py allows them).

A ```yaml block is a dataset spec when it has both `source:` and `control_rate_hz:`, or
when its fence is marked (```yaml spec). A block with those keys but no `name:` is a
deliberate fragment (a section of a spec shown alone) and is not validated.

The CLI runs in-process, `cli.main.main([command, "--help"])`: the help texts are the
quick reference the docs point to."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
BEAM_COMMANDS = {"convert", "mix", "edit"}  # their unknown flags go to Beam's PipelineOptions
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)``` *$", re.S | re.M)
PLACEHOLDER = re.compile(r"<[^<>\n]*>")  # <dataset>, <run-folder | bundle>: one word, not a redirect or a pipe
SEPARATORS = {"&&", "||", ";", "|"}


class Block(NamedTuple):
    where: str  # page:line of the fence
    info: list[str]  # the fence's info string: language first, then marks
    body: str


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(f"{page.relative_to(ROOT)}:{line}", match["info"].split(), match["body"]))
    return found


def language(block: Block) -> str:
    return block.info[0].lower() if block.info else ""


# -- dataset specs ----------------------------------------------------------------------


def yaml_blocks() -> list[Block]:
    return [b for b in blocks() if language(b) in ("yaml", "yml")]


def is_spec(block: Block, data: object) -> bool:
    if "spec" in block.info[1:]:
        return True
    return isinstance(data, dict) and {"source", "control_rate_hz", "name"} <= data.keys()


def spec_blocks() -> list[Block]:
    specs = []
    for block in yaml_blocks():
        try:
            data = yaml.safe_load(block.body)
        except yaml.YAMLError:
            continue  # test_yaml_blocks_load names it
        if is_spec(block, data):
            specs.append(block)
    return specs


@pytest.mark.parametrize("block", yaml_blocks(), ids=lambda b: b.where)
def test_yaml_blocks_load(block):
    yaml.safe_load(block.body)


@pytest.mark.parametrize("block", spec_blocks(), ids=lambda b: b.where)
def test_dataset_specs_parse(block):
    from robolake.spec import parse_spec

    parse_spec(yaml.safe_load(block.body), origin=block.where)  # paths need not exist


# -- robolake command lines ---------------------------------------------------------------


class CommandLine(NamedTuple):
    where: str
    words: list[str]  # "robolake", the command, its arguments

    def __str__(self) -> str:
        return f"{self.where} {' '.join(self.words[:3])}"


def logical_lines(body: str) -> list[str]:
    """The block's lines, continuation backslashes joined, console prompts dropped."""
    lines, pending = [], ""
    for raw in body.splitlines():
        line = pending + raw.removeprefix("$ ")
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines + ([pending] if pending else [])


def commands_in(line: str) -> list[list[str]]:
    """Each simple command of a shell line, as words; comments dropped."""
    words = shlex.split(PLACEHOLDER.sub("PLACEHOLDER", line), comments=True)
    commands, current = [], []
    for word in words:
        if word in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in commands + [current] if c]


def robolake_lines() -> list[CommandLine]:
    found = []
    for block in blocks():
        if language(block) not in SHELLS:
            continue
        for offset, line in enumerate(logical_lines(block.body)):
            for words in commands_in(line):
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]  # VAR=value before the command
                if words and words[0] == "robolake":
                    page, fence = block.where.rsplit(":", 1)
                    found.append(CommandLine(f"{page}:{int(fence) + 1 + offset}", words))
    return found


def flags(words: list[str]) -> list[str]:
    """Every --flag among the words, [optional] brackets and =values stripped."""
    found = []
    for word in words:
        word = word.strip("[]()")
        if word.startswith("--") and len(word) > 2:
            found.append(word.split("=", 1)[0].rstrip(".,"))
    return found


@functools.cache
def help_text(*argv: str) -> str:
    """What `robolake ARGV --help` prints."""
    from cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main([*argv, "--help"])
        except SystemExit as exc:  # argparse ends --help with SystemExit(0)
            code = exc.code
    assert code in (0, None), f"robolake {' '.join(argv)} --help exited {code}"
    return out.getvalue()


def subcommands(help: str) -> set[str]:
    """The operations a command's usage line lists (`{drop,retask,...} ...`)."""
    match = re.search(r"\{([\w,-]+)\} \.\.\.", help)
    return set(match[1].split(",")) if match else set()


@pytest.mark.parametrize("line", robolake_lines(), ids=str)
def test_robolake_command_lines_use_existing_flags(line):
    from cli.main import COMMANDS

    assert len(line.words) > 1, f"{line.where}: `robolake` without a command"
    command = line.words[1]
    assert command in COMMANDS, f"{line.where}: no command `robolake {command}` (commands: {', '.join(COMMANDS)})"
    argv, rest = [command], line.words[2:]
    operations = subcommands(help_text(command))
    if operations:
        assert rest and rest[0] in operations, f"{line.where}: `robolake {command}` needs one of {sorted(operations)}"
        argv, rest = [command, rest[0]], rest[1:]
    help = help_text(*argv)
    allowed = set()
    if command in BEAM_COMMANDS:
        from pipelines.beam_options import beam_option_flags

        allowed = beam_option_flags()
    unknown = [f for f in flags(rest)
               if f not in allowed and not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", help)]
    assert not unknown, f"{line.where}: `robolake {' '.join(argv)} --help` lists no {', '.join(unknown)}"


# -- the pages themselves -------------------------------------------------------------------


def test_the_docs_have_examples_to_check():
    assert spec_blocks(), "no dataset spec in README.md or docs/"
    assert len(robolake_lines()) >= 14


def test_every_command_has_a_page_that_points_to_its_help():
    from cli.main import COMMANDS

    for command in COMMANDS:
        page = ROOT / "docs" / f"{command}.md"
        assert page.exists(), f"docs/{command}.md is missing"
        top = "\n".join(page.read_text().splitlines()[:6])
        assert f"robolake {command}" in top and "--help" in top, (
            f"docs/{command}.md: say at the top that `robolake {command} --help` is the quick reference")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_point_to_pages_and_headings_that_exist():
    outside_fences = {page.resolve(): FENCE.sub("", page.read_text()) for page in PAGES}
    headings = {page: {slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)} for page, text in outside_fences.items()}
    broken = []
    for page, text in outside_fences.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and anchor not in headings.get(linked, set())):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken
