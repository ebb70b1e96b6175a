"""`robolake --help` lists every command once, grouped in data-flow order, in 100 columns."""

from __future__ import annotations

import re

from cli.main import COMMANDS, main

GROUPS = {
    "build data": ["sample", "convert", "mix", "edit"],
    "check data": ["validate", "report", "query", "stats"],
    "export data": ["lerobot", "view"],
    "train and evaluate": ["train", "evaluate", "export"],
    "overview and housekeeping": ["summary", "lineage", "gc"],
}


def listed(text: str) -> dict[str, list[str]]:
    """Group heading -> the commands under it, in order."""
    groups: dict[str, list[str]] = {}
    for line in text.splitlines():
        if heading := re.fullmatch(r"([a-z][a-z ]+):", line):
            groups[heading[1]] = []
        elif groups and (command := re.match(r"  (\S+) +\S", line)):
            groups[list(groups)[-1]].append(command[1])
    return groups


def test_help_lists_the_commands_grouped_in_data_flow_order(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: robolake <command> [options]\n")
    assert listed(out) == GROUPS
    assert sorted(sum(GROUPS.values(), [])) == sorted(COMMANDS)  # each command once
    for name, command in COMMANDS.items():
        assert f"  {name:<10} {command.help}\n" in out
    assert all(len(line) <= 100 for line in out.splitlines())


def test_no_command_prints_the_list_on_stderr_and_fails(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and listed(captured.err) == GROUPS


def test_a_misspelt_command_is_one_message_with_the_closest(capsys):
    assert main(["sumary"]) == 2
    assert capsys.readouterr().err == "robolake: error: unknown command 'sumary' (did you mean summary?)\n"
