"""Issue 7: following only the admin guide, an admin installs two instances and federates them.

Two kinds of test, both reading docs/admin-guide.md itself:

- The guide cannot drift from the command line: every `flattrfed ...` command written in a
  code block parses with the real parser (`flattrfed.cli.build_parser()`), every command
  written inline names real commands and options, and the command table lists every command
  and option there is. These need no database.
- The walkthrough ("Trying it: two instances on one machine") is run command by command, in
  the order written, from the code blocks tagged `<!-- walkthrough: alpha -->` and
  `<!-- walkthrough: beta -->`: each line is a real subprocess with the environment its
  terminal's `export` lines build, against two fresh PostgreSQL databases, on 127.0.0.1 only.
  Skipped without FLATTRFED_TEST_POSTGRES_URL, since PostgreSQL is what the guide installs.

What the test substitutes, and why:

- free ports for the guide's 8081 (alpha) and 8082 (beta), everywhere in the walkthrough;
- its own databases (made with CREATE DATABASE through asyncpg, dropped at the end) for the
  `createdb` lines of the `walkthrough: postgres` block and the FLATTRFED_DATABASE_URL values;
- a temporary directory for each FLATTRFED_DATA_DIR;
- the `flattrfed` of the virtual environment running the tests for the one the
  `walkthrough: install` block installs. The install step itself (a plain, non-editable
  install that migrates and serves) is covered by tests/integration/test_packaging.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from flattrfed.cli import build_parser
from tests.harness.databases import (
    DATABASE_PREFIX,
    POSTGRES_SKIP_REASON,
    asyncpg_dsn,
    postgres_admin_url,
    sqlalchemy_url,
)

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "admin-guide.md"
# The `flattrfed` of the environment under test, not a fresh install (see the module docstring).
FLATTRFED = Path(sys.executable).with_name("flattrfed")

# Code blocks of program output or documents, not commands: the parse checks skip them.
OUTPUT_LANGUAGES = {"text", "json"}
SEPARATORS = {"|", "||", "&", "&&", ";"}
# A `flattrfed` word starts a command when it comes first or after one of these.
COMMAND_PREFIXES = SEPARATORS | {"sudo", "exec", "-m"}
# Options the command table may leave out: accepted there, but they do nothing.
UNUSED_OPTIONS: dict[tuple[str, ...], set[str]] = {}

# The walkthrough's terminals, and the port each one's commands use in the guide.
GUIDE_PORTS = {"alpha": 8081, "beta": 8082}
WALKTHROUGH_MARKER = re.compile(r"<!--\s*walkthrough:\s*(?P<shell>[a-z]+)\s*-->\s*$")
EXPECTATION = re.compile(
    r"#\s*(?P<repeat>repeat until it )?prints\s+\"(?P<key>\w+)\":\s*(?P<value>\S+)\s*$"
)
HEALTH_TIMEOUT = 30.0
ARRIVAL_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0


# --- reading the guide -----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of the guide."""

    language: str
    body: str
    line: int  # where its opening fence is, 1-based
    walkthrough: str | None  # the terminal of a `<!-- walkthrough: NAME -->` block


def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^(\s*)```(.*)$", lines[index])
        if opening is None:
            index += 1
            continue
        indent, language = opening.group(1), opening.group(2).strip()
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        assert index < len(lines), f"admin-guide.md:{start + 1}: code block is not closed"
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = WALKTHROUGH_MARKER.match(previous.strip())
        blocks.append(
            Block(
                language=language,
                body=textwrap.dedent("\n".join(body)) if indent else "\n".join(body),
                line=start + 1,
                walkthrough=marker.group("shell") if marker else None,
            )
        )
        index += 1
    return blocks


def prose(text: str) -> str:
    """The guide without its code blocks and comments (so inline spans are found)."""
    without_comments = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"^\s*```.*?^\s*```[ \t]*$", "", without_comments, flags=re.S | re.M)


def words(line: str) -> list[str]:
    """A shell line as the shell splits it: quotes removed, comments dropped, | & ; apart."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    return list(lexer)


def is_command_word(word: str) -> bool:
    return word in {"flattrfed", "flattrfed-admin"} or word.endswith("/bin/flattrfed")


def commands_in(line: str) -> list[list[str]]:
    """The arguments of every flattrfed command on a shell line (also inside `sh -c '...'`)."""
    # systemd's instance specifier stands for a port in the units of the guide.
    tokens = words(line.replace("%i", "8080"))
    found: list[list[str]] = []
    for index, word in enumerate(tokens):
        if index > 0 and tokens[index - 1] == "-c":
            found += commands_in(word)
            continue
        if not is_command_word(word):
            continue
        if index > 0 and tokens[index - 1] not in COMMAND_PREFIXES:
            continue  # e.g. `createdb --owner flattrfed flattrfed`: a name, not the command
        arguments: list[str] = []
        for argument in tokens[index + 1 :]:
            if argument in SEPARATORS:
                break
            arguments.append(argument)
        if "$@" in arguments:
            continue  # the wrapper script, which passes its own arguments on
        found.append(arguments)
    return found


def guide_command_lines() -> list[tuple[int, str, list[str]]]:
    """(line number, line, arguments) of each flattrfed command in the guide's code blocks."""
    found: list[tuple[int, str, list[str]]] = []
    for block in code_blocks(guide_text()):
        if block.language in OUTPUT_LANGUAGES:
            continue
        for offset, line in enumerate(block.body.splitlines(), start=1):
            if "flattrfed" not in line:
                continue
            try:
                commands = commands_in(line)
            except ValueError as error:
                pytest.fail(f"admin-guide.md:{block.line + offset}: cannot split {line!r}: {error}")
            found += [(block.line + offset, line.strip(), command) for command in commands]
    return found


# --- the command line's structure --------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    """A parser's subcommands by their main name (aliases left out), or None for a leaf."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            named: dict[str, argparse.ArgumentParser] = {}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias maps to the same parser, after its name
                    seen.add(id(sub))
                    named[name] = sub
            return named
    return None


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = subcommands(parser)
    if subs is None:
        yield path, parser
        return
    for name, sub in subs.items():
        yield from leaf_commands(sub, (*path, name))


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        option: action
        for option, action in parser._option_string_actions.items()
        if option.startswith("--") and option != "--help"
    }


def positionals_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    ]


@dataclass
class Synopsis:
    """A command as the guide writes it inline: `flattrfed deposit record NAME [--json]`."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    options: set[str] = field(default_factory=set)
    positionals: int = 0


def read_synopses(text: str) -> list[Synopsis]:
    """Every command a synopsis names; `a|b` in a command word names both commands."""
    tokens = [token.strip("[]") for token in text.replace("\\|", "|").split()]
    assert tokens, text
    assert tokens[0] in {"flattrfed", "flattrfed-admin"}, text
    branches: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = [((), build_parser())]
    rest = tokens[1:]
    while rest:
        subs = subcommands(branches[0][1])
        if subs is None:
            break
        word, rest = rest[0], rest[1:]
        next_branches = []
        for path, parser in branches:
            parser_subs = subcommands(parser) or {}
            for alternative in word.split("|"):
                assert alternative in parser_subs, (
                    f"`{text}`: {alternative!r} is not a command of "
                    f"`flattrfed {' '.join(path)}`; it has {sorted(parser_subs)}"
                )
                next_branches.append(((*path, alternative), parser_subs[alternative]))
        branches = next_branches
    synopses: list[Synopsis] = []
    for path, parser in branches:
        synopsis = Synopsis(path, parser)
        options = options_of(parser)
        remaining = list(rest)
        while remaining:
            token = remaining.pop(0)
            if token.startswith("--"):
                assert token in options, (
                    f"`{text}`: `flattrfed {' '.join(path)}` has no option {token}; "
                    f"it has {sorted(options)}"
                )
                synopsis.options.add(token)
                if options[token].nargs != 0 and remaining:
                    remaining.pop(0)  # the option's value
            else:
                synopsis.positionals += 1
        assert synopsis.positionals <= len(positionals_of(parser)), (
            f"`{text}`: too many arguments for `flattrfed {' '.join(path)}`"
        )
        synopses.append(synopsis)
    return synopses


def command_table_rows() -> list[str]:
    """The first cell's `flattrfed ...` spans of the table in the guide's Commands section."""
    text = guide_text()
    section = text[text.index("### Commands") :]
    section = section[: section.index("\n## ")]
    spans: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `flattrfed"):
            first_cell = re.split(r"(?<!\\)\|", line)[1]
            spans += re.findall(r"`(flattrfed [^`]+)`", first_cell)
    return spans


# --- the parse checks (no database) -----------------------------------------------------------


def test_every_code_block_in_the_guide_says_what_it_holds() -> None:
    """Commands are checked and output is not, so each block must say which it is."""
    untagged = [block.line for block in code_blocks(guide_text()) if not block.language]
    assert untagged == [], f"admin-guide.md: code blocks without a language at lines {untagged}"


def test_every_command_in_the_guide_parses() -> None:
    commands = guide_command_lines()
    assert len(commands) > 40, "the guide's commands were not found"
    parser = build_parser()
    for number, line, arguments in commands:
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(arguments)
            except SystemExit:
                pytest.fail(
                    f"admin-guide.md:{number}: `{line}` does not parse: {errors.getvalue().strip()}"
                )


def test_every_command_written_inline_names_real_commands_and_options() -> None:
    spans = re.findall(r"`(?:sudo )?(flattrfed(?:-admin)? [^`]+)`", prose(guide_text()))
    assert len(spans) > 40, "the guide's inline commands were not found"
    for span in spans:
        if span.split()[1] in {"…", "..."}:
            continue  # "`flattrfed …` stands for": any command
        read_synopses(span)


def test_the_command_table_lists_every_command_with_all_its_options() -> None:
    documented: dict[tuple[str, ...], Synopsis] = {}
    for span in command_table_rows():
        for synopsis in read_synopses(span):
            documented[synopsis.path] = synopsis
    for path, parser in leaf_commands(build_parser()):
        name = f"flattrfed {' '.join(path)}"
        assert path in documented, f"the guide's command table does not list `{name}`"
        synopsis = documented[path]
        options = set(options_of(parser)) - UNUSED_OPTIONS.get(path, set())
        missing = options - synopsis.options
        assert not missing, f"the command table leaves out {sorted(missing)} of `{name}`"
        required = {option for option, action in options_of(parser).items() if action.required}
        assert required <= synopsis.options, f"`{name}`: required {sorted(required)}"
        assert synopsis.positionals == len(positionals_of(parser)), (
            f"the command table gives `{name}` {synopsis.positionals} arguments; it takes "
            f"{[action.dest for action in positionals_of(parser)]}"
        )


# --- the walkthrough -------------------------------------------------------------------------


@dataclass
class Step:
    """One line of a walkthrough block, as the test will do it."""

    shell: str
    line: str  # as written in the guide
    action: str  # activate, export, run, background, health, stop
    arguments: list[str] = field(default_factory=list)
    stdin: str | None = None
    expect: tuple[str, Any, bool] | None = None  # (key, value, repeat until it holds)

    def is_command(self, *prefix: str) -> bool:
        return self.action in {"run", "background"} and self.arguments[: len(prefix)] == [*prefix]


def walkthrough_blocks() -> list[Block]:
    return [block for block in code_blocks(guide_text()) if block.walkthrough is not None]


def walkthrough_steps() -> list[Step]:
    steps: list[Step] = []
    for block in walkthrough_blocks():
        if block.walkthrough not in GUIDE_PORTS:
            continue  # install and postgres: done by the test's own means (see the docstring)
        for line in block.body.splitlines():
            tokens = words(line)
            if not tokens:
                continue
            step = _step(block.walkthrough, line.strip(), tokens)
            expectation = EXPECTATION.search(line)
            if expectation is not None:
                step.expect = (
                    expectation.group("key"),
                    json.loads(expectation.group("value")),
                    expectation.group("repeat") is not None,
                )
            steps.append(step)
    return steps


def _step(shell: str, line: str, tokens: list[str]) -> Step:
    if tokens[0] == "." and tokens[1].endswith("/bin/activate"):
        return Step(shell, line, "activate")
    if tokens[0] == "export" and len(tokens) == 2 and "=" in tokens[1]:
        return Step(shell, line, "export", tokens[1:])
    if tokens[0] == "curl":
        return Step(shell, line, "health", [tokens[-1]])
    if tokens == ["kill", "%1"]:
        return Step(shell, line, "stop")
    if tokens[0] == "echo" and len(tokens) > 3 and tokens[2] == "|" and tokens[3] == "flattrfed":
        return Step(shell, line, "run", tokens[4:], stdin=tokens[1] + "\n")
    if tokens[0] == "flattrfed" and tokens[-1] == "&":
        return Step(shell, line, "background", tokens[1:-1])
    if tokens[0] == "flattrfed" and not set(tokens) & SEPARATORS:
        return Step(shell, line, "run", tokens[1:])
    raise AssertionError(f"the walkthrough has a line this test cannot follow: {line!r}")


def guide_databases() -> list[str]:
    """The databases the walkthrough's `postgres` block makes with createdb."""
    names: list[str] = []
    for block in walkthrough_blocks():
        if block.walkthrough == "postgres":
            for line in block.body.splitlines():
                tokens = words(line)
                if "createdb" in tokens:
                    names.append(tokens[-1])
    return names


def test_the_walkthrough_covers_install_to_federation() -> None:
    """What issue 7 asks the guide to walk through is there, in a form the test can run."""
    steps = walkthrough_steps()
    shells = {block.walkthrough for block in walkthrough_blocks()}
    assert shells == {"install", "postgres", "alpha", "beta"}

    def has(shell: str, *prefix: str, expect: tuple[str, Any, bool] | None = None) -> bool:
        found = any(
            step.shell == shell
            and step.is_command(*prefix)
            and (expect is None or step.expect == expect)
            for step in steps
        )
        wanted = f"`flattrfed {' '.join(prefix)} ...`" + (f" with {expect}" if expect else "")
        assert found, f"the walkthrough's {shell} terminal has no {wanted}"
        return found

    for shell, port in GUIDE_PORTS.items():
        exports = dict(
            step.arguments[0].split("=", 1)
            for step in steps
            if step.shell == shell and step.action == "export"
        )
        assert exports["FLATTRFED_BASE_URL"] == f"http://127.0.0.1:{port}"
        assert exports["FLATTRFED_ALLOW_HTTP"] == "1"
        assert exports["FLATTRFED_ALLOWED_PRIVATE_ADDRESSES"] == "127.0.0.0/8"
        database = urlsplit(exports["FLATTRFED_DATABASE_URL"])
        assert database.scheme == "postgresql+asyncpg"
        assert database.path.lstrip("/") in guide_databases()
        assert has(shell, "db", "upgrade")
        assert any(
            step.shell == shell
            and step.is_command("member", "add")
            and {"--admin", "--password-stdin"} <= set(step.arguments)
            and step.stdin
            for step in steps
        ), f"{shell}: no `echo PASSWORD | flattrfed member add NAME --admin --password-stdin`"
        assert has(shell, "serve", "--host", "127.0.0.1", "--port", str(port))
        assert any(s.shell == shell and s.action == "health" for s in steps), f"{shell}: no curl"
        other = next(name for name in GUIDE_PORTS if name != shell)
        assert has(shell, "peer", "add", f"127.0.0.1:{GUIDE_PORTS[other]}", "--credit-limit")
        assert has(shell, "check", "--json", expect=("ok", True, False))
        assert any(s.shell == shell and s.action == "stop" for s in steps), f"{shell}: no kill"
    assert has("beta", "thing", "add")
    for prefix in [("member", "add"), ("deposit", "record"), ("budget", "set"), ("flattr",)]:
        assert has("alpha", *prefix), prefix
    flattr = next(step for step in steps if step.is_command("flattr"))
    assert flattr.arguments[-1].endswith(f"@127.0.0.1:{GUIDE_PORTS['beta']}")
    assert has("beta", "thing", "show", expect=("flattrs_this_month", 1, True))


class Terminal:
    """One of the walkthrough's terminals: its environment and its background server."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLATTRFED_")}
        self.server: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{name}-serve.log"


class Walkthrough:
    """Runs the guide's steps as subprocesses, and keeps a transcript for failure messages."""

    def __init__(self, workdir: Path, ports: dict[str, int], databases: dict[str, str]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.databases = databases
        self.terminals = {name: Terminal(name, workdir) for name in GUIDE_PORTS}
        self.transcript: list[str] = []

    def localize(self, text: str) -> str:
        """The guide's ports 8081 and 8082 become the free ports of this run."""
        for name, guide_port in GUIDE_PORTS.items():
            text = re.sub(rf"\b{guide_port}\b", str(self.ports[name]), text)
        return text

    def fail(self, message: str) -> None:
        logs = [
            f"--- {terminal.name} serve log (tail) ---\n"
            + (terminal.log.read_text(errors="replace")[-3000:] if terminal.log.exists() else "")
            for terminal in self.terminals.values()
        ]
        pytest.fail("\n".join([message, "--- transcript ---", *self.transcript[-30:], *logs]))

    def do(self, step: Step) -> None:
        terminal = self.terminals[step.shell]
        arguments = [self.localize(argument) for argument in step.arguments]
        self.transcript.append(f"[{step.shell}] $ {self.localize(step.line)}")
        if step.action == "activate":
            return  # the test runs the flattrfed of its own virtual environment
        if step.action == "export":
            name, value = arguments[0].split("=", 1)
            if name == "FLATTRFED_DATA_DIR":
                value = str(self.workdir / step.shell)
            elif name == "FLATTRFED_DATABASE_URL":
                value = self.databases[step.shell]
            if value != arguments[0].split("=", 1)[1]:
                self.transcript.append(f"(the test uses {name}={value})")
            terminal.env[name] = value
        elif step.action == "background":
            assert terminal.server is None, "one background server per terminal"
            with terminal.log.open("wb") as log:
                terminal.server = subprocess.Popen(
                    [str(FLATTRFED), *arguments],
                    env=terminal.env,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        elif step.action == "health":
            self.wait_for_health(terminal, arguments[0])
        elif step.action == "stop":
            self.stop(terminal)
        elif step.expect is not None and step.expect[2]:
            self.repeat_until(terminal, arguments, step.expect)
        else:
            output = self.run(terminal, arguments, step.stdin)
            if step.expect is not None:
                self.check_expectation(output, step.expect)

    def run(self, terminal: Terminal, arguments: list[str], stdin: str | None) -> str:
        try:
            result = subprocess.run(
                [str(FLATTRFED), *arguments],
                env=terminal.env,
                cwd=self.workdir,
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.fail(f"`flattrfed {' '.join(arguments)}` took over {COMMAND_TIMEOUT} s")
            raise
        self.transcript.append(result.stdout.rstrip() + result.stderr.rstrip())
        if result.returncode != 0:
            self.fail(f"`flattrfed {' '.join(arguments)}` exited with {result.returncode}")
        return result.stdout

    def check_expectation(self, output: str, expect: tuple[str, Any, bool]) -> bool:
        key, value, repeat = expect
        try:
            document = json.loads(output)
        except json.JSONDecodeError:
            self.fail(f"expected JSON with {key!r}, got {output!r}")
            raise
        if document.get(key) == value:
            return True
        if not repeat:
            self.fail(f"expected {key!r}: {value!r}, got {document.get(key)!r}")
        return False

    def repeat_until(
        self, terminal: Terminal, arguments: list[str], expect: tuple[str, Any, bool]
    ) -> None:
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while not self.check_expectation(self.run(terminal, arguments, None), expect):
            if time.monotonic() > deadline:
                self.fail(f"{expect[0]!r} was not {expect[1]!r} after {ARRIVAL_TIMEOUT} s")
            time.sleep(0.5)

    def wait_for_health(self, terminal: Terminal, url: str) -> None:
        assert urlsplit(url).hostname == "127.0.0.1", url
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while True:
            if terminal.server is not None and terminal.server.poll() is not None:
                self.fail(f"{terminal.name}'s server exited with {terminal.server.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                    body = json.loads(response.read())
                    self.transcript.append(json.dumps(body))
                    if body.get("status") == "ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.fail(f"{url} did not answer ok within {HEALTH_TIMEOUT} s")
            time.sleep(0.2)

    def stop(self, terminal: Terminal) -> None:
        """`kill %1`: SIGTERM to the terminal's background server, which stops cleanly."""
        server = terminal.server
        assert server is not None, f"{terminal.name} has no background server to stop"
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.fail(f"{terminal.name}'s server did not stop within 20 s of SIGTERM")
            raise
        terminal.server = None
        if code != 0:
            self.fail(f"{terminal.name}'s server exited with {code} on SIGTERM")

    def kill_leftovers(self) -> None:
        for terminal in self.terminals.values():
            server, terminal.server = terminal.server, None
            if server is not None and server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def create_databases(admin_url: str, labels: list[str]) -> dict[str, str]:
    """One new, empty database per label, named so the harness drops it if this run dies."""
    names = {
        label: f"{DATABASE_PREFIX}{os.getpid()}_guide_{label}_{uuid.uuid4().hex[:6]}"
        for label in labels
    }
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        for name in names.values():
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return names


async def drop_databases(admin_url: str, names: list[str]) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.mark.postgres
def test_following_the_walkthrough_federates_two_instances_on_postgresql(tmp_path: Path) -> None:
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    assert FLATTRFED.exists(), f"no flattrfed command next to {sys.executable}"
    steps = walkthrough_steps()
    # The guide's `createdb` lines, done the test's way: fresh databases, dropped at the end.
    assert sorted(guide_databases()) == sorted(f"flattrfed_{name}" for name in GUIDE_PORTS)
    names = asyncio.run(create_databases(admin_url, list(GUIDE_PORTS)))
    try:
        ports = {name: free_port() for name in GUIDE_PORTS}
        databases = {label: sqlalchemy_url(admin_url, name) for label, name in names.items()}
        walkthrough = Walkthrough(tmp_path, ports, databases)
        try:
            for step in steps:
                walkthrough.do(step)
        finally:
            walkthrough.kill_leftovers()
    finally:
        asyncio.run(drop_databases(admin_url, list(names.values())))
