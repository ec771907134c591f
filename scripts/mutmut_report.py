#!/usr/bin/env python3
"""`make mutmut`: a general mutation tester (mutmut) over the modules that need no server, each
against its own unit tests, in a scratch copy of the working tree. Prints the score per module;
every survivor is either listed in ``EQUIVALENT`` with the reason it cannot change behaviour, or
reported (exit 1). Not part of CI. Arguments: run only the modules whose path contains one.

A module whose other code needs a server is scored on the named functions only (the pure ones its
unit tests cover): mutmut names each mutant after its function (``x__plan__mutmut_3``, a method
``xǁ_Redoǁcharged__mutmut_1``), so the mutants of the other functions are left out of the count.

Curated mutations of the code that needs a server (the session, the recipes) are `make mutate`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).with_name("mutmut")
SEP = "xǁ"  # how mutmut prefixes a method's mutants (xǁClassǁmethod__mutmut_N)

#: the dispatcher's planning: pure functions over its records, and the pure helpers they call.
#: ``Move`` and ``_Plan`` are plain dataclasses, and mutmut makes no mutant of a property
#: (``_WorkerView.free``, ``_Redo.charged``) nor of a path made by an f-string (``_Paths``):
#: the planning tests cover those through ``_plan``.
PLANNING = frozenset({
    "_plan", "_placements", "_assign_op", "_refused_move", "_requeue", "_retries", "_until_due",
    "_retry_delay", "_parse_worker",
})  # fmt: skip

#: the trigger's parsing of a legacy ``CMD|DATA`` request, of a framed JSON request and of an
#: ``ERR`` reply line, and the checks every request passes before its handler
FRAME_PARSING = frozenset({
    "_parse_legacy", "_parse_framed", "_check_request", "_error_line", "_is_loopback",
    "TriggerError.__init__", "_WithId.__init__", "TriggerServer.check_address",
})  # fmt: skip

#: (module, the unit tests that cover it, the functions scored: None for all): none of these
#: tests starts ZooKeeper
MODULES: list[tuple[str, list[str], frozenset[str] | None]] = [
    ("aiocoord/transport/state.py", ["tests/transport/test_state.py"], None),
    ("aiocoord/transport/paths.py", ["tests/transport/test_units.py"], None),
    ("aiocoord/transport/jute.py", ["tests/transport/test_units.py"], None),
    ("aiocoord/transport/codec.py", ["tests/transport/test_units.py"], None),
    ("aiocoord/recipes/tasks.py", ["tests/recipes/test_dispatch_planning.py"], PLANNING),
    (
        "aiocoord/recipes/config/trigger.py",
        ["tests/recipes/test_trigger_parsing.py"],
        FRAME_PARSING,
    ),
]

#: (module, removed line, added line) -> why the mutant behaves exactly as the original
EQUIVALENT: dict[tuple[str, str, str], str] = {
    (
        "aiocoord/transport/state.py",
        "if zxid > self.last_zxid:",
        "if zxid >= self.last_zxid:",
    ): "assigning an equal zxid leaves last_zxid as it was",
    (
        "aiocoord/transport/state.py",
        'raise AssertionError(f"unknown session input {event!r}")  # pragma: no cover',
        "raise AssertionError(None)  # pragma: no cover",
    ): "unreachable: the match covers every Input type (mypy checks it)",
    (
        "aiocoord/transport/state.py",
        "self.seen_rw = False  # the next session has seen no read/write server yet",
        "self.seen_rw = None  # the next session has seen no read/write server yet",
    ): "only ever read for truth (connect_id); None and False are both false",
    (
        "aiocoord/transport/state.py",
        "return Transition((SessionEvent(SessionState.LOST, old, None),), lost=reason)",
        "return Transition((SessionEvent(SessionState.LOST, old, ),), lost=reason)",
    ): "host defaults to None",
    (
        "aiocoord/transport/paths.py",
        "o > 0xFFFF",
        "o >= 0xFFFF",
    ): "0xFFFF is refused by the 0xFFF0-0xFFFF range as well",
    (
        "aiocoord/transport/paths.py",
        "or 0xFFF0 <= o <= 0xFFFF",
        "or 0xFFF0 <= o <= 65536",
    ): "0x10000 is refused by the o > 0xFFFF test as well",
    (
        "aiocoord/transport/paths.py",
        'checked = path + "1" if sequential else path',
        'checked = path + "XX1XX" if sequential else path',
    ): "any suffix without a slash stands for the server's counter",
    (
        "aiocoord/transport/paths.py",
        "plain = checked.isascii() and checked.isprintable()  # no character to refuse: the usual",
        "plain = None  # no character to refuse: the usual",
    ): "a fast path: every character is then checked one by one, with the same verdict",
    (
        "aiocoord/transport/jute.py",
        "if n < 0:",
        "if n <= 0:",
    ): "a zero length reads as empty either way",
    (
        "aiocoord/transport/jute.py",
        "if n < 0:",
        "if n < 1:",
    ): "a zero length reads as empty either way",
    (
        "aiocoord/transport/jute.py",
        "self.item = item",
        "self.item = None",
    ): "runs at import, before mutmut's trampoline selects a mutant (every vector test uses it)",
    (
        "aiocoord/transport/jute.py",
        "self.name = name",
        "self.name = None",
    ): "runs at import, before mutmut's trampoline selects a mutant (the arity test reads it)",
    (
        "aiocoord/transport/jute.py",
        "for field, value in zip(self.fields, values, strict=True):",
        "for field, value in zip(self.fields, values, strict=None):",
    ): "the arity check just before makes strict= moot",
    (
        "aiocoord/transport/jute.py",
        "for field, value in zip(self.fields, values, strict=True):",
        "for field, value in zip(self.fields, values, ):",
    ): "the arity check just before makes strict= moot",
    (
        "aiocoord/transport/jute.py",
        "for field, value in zip(self.fields, values, strict=True):",
        "for field, value in zip(self.fields, values, strict=False):",
    ): "the arity check just before makes strict= moot",
    (
        "aiocoord/transport/jute.py",
        "_, timeout_ms, session_id = CONNECTED_HEAD.unpack_from(data, 0)",
        "_, timeout_ms, session_id = CONNECTED_HEAD.unpack_from(data, )",
    ): "the offset defaults to 0",
    (
        "aiocoord/recipes/tasks.py",
        "if failures < 1 or first <= 0:",
        "if failures < 1 or first < 0:",
    ): "with first == 0 the delay is min(0.0, cap): 0.0, as a Dispatcher refuses a negative cap",
    (
        "aiocoord/recipes/tasks.py",
        'info = codec.loads_object(data, what="worker node")',
        "info = codec.loads_object(data, what=None)",
    ): "the DecodeError is caught on the next lines: its message (which names what) is never read",
    (
        "aiocoord/recipes/tasks.py",
        'info = codec.loads_object(data, what="worker node")',
        "info = codec.loads_object(data, )",
    ): "the DecodeError is caught on the next lines: its message (which names what) is never read",
    (
        "aiocoord/recipes/tasks.py",
        'info = codec.loads_object(data, what="worker node")',
        'info = codec.loads_object(data, what="XXworker nodeXX")',
    ): "the DecodeError is caught on the next lines: its message (which names what) is never read",
    (
        "aiocoord/recipes/tasks.py",
        'info = codec.loads_object(data, what="worker node")',
        'info = codec.loads_object(data, what="WORKER NODE")',
    ): "the DecodeError is caught on the next lines: its message (which names what) is never read",
    (
        "aiocoord/recipes/tasks.py",
        'return max(0, capacity), bool(info.get("draining", False))',
        'return max(0, capacity), bool(info.get("draining", None))',
    ): "bool() of a missing draining is False either way",
    (
        "aiocoord/recipes/tasks.py",
        'return max(0, capacity), bool(info.get("draining", False))',
        'return max(0, capacity), bool(info.get("draining", ))',
    ): "bool() of a missing draining is False either way",
    (
        "aiocoord/recipes/config/trigger.py",
        'cmd = head.decode("ascii")',
        'cmd = head.decode("ASCII")',
    ): "codec names are looked up case-insensitively: the same codec",
    (
        "aiocoord/recipes/config/trigger.py",
        'text = line.decode("utf-8")',
        'text = line.decode("UTF-8")',
    ): "codec names are looked up case-insensitively: the same codec",
}


def _diff(name: str, cwd: Path) -> tuple[str, str]:
    shown = subprocess.run(
        [MUTMUT, "show", name], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    removed = [ln[1:].strip() for ln in shown.splitlines() if re.match(r"-[^-]", ln)]
    added = [ln[1:].strip() for ln in shown.splitlines() if re.match(r"\+[^+]", ln)]
    return " / ".join(removed), " / ".join(added)


def function_of(mutant: str) -> str:
    """The function a mutant was made from: ``name`` or ``Class.method``."""
    mangled = re.sub(r"__mutmut_\d+$", "", mutant).rpartition(".")[2]
    if mangled.startswith(SEP):
        cls, _, method = mangled[len(SEP) :].partition(SEP[-1])
        return f"{cls}.{method}"
    assert mangled.startswith("x_"), mutant
    return mangled[2:]


def _scratch(into: Path) -> None:
    """The working tree's tracked files (with their uncommitted changes)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / name)


def run(
    module: str, tests: list[str], functions: frozenset[str] | None
) -> tuple[dict[str, int], list[tuple[str, str, str]], set[str]]:
    """The mutants' statuses (counted), the survivors (name, removed, added) and the functions
    that had mutants, of ``functions`` only when given."""
    with tempfile.TemporaryDirectory(prefix="aiocoord-mutmut-") as tmp:
        work = Path(tmp)
        _scratch(work)
        (work / "setup.cfg").write_text(
            "[mutmut]\nsource_paths=aiocoord/\n"
            f"only_mutate={module}\n"
            f"pytest_add_cli_args_test_selection={' '.join(tests)}\n"
            "pytest_add_cli_args=-p no:cacheprovider -q\n"
        )
        env = {**os.environ, "PYTHONPATH": str(work)}
        subprocess.run([MUTMUT, "run"], cwd=work, env=env, capture_output=True, check=False)
        listed = subprocess.run(
            [MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True, text=True
        ).stdout
        counts: dict[str, int] = {}
        survivors = []
        seen: set[str] = set()
        for line in listed.splitlines():
            name, _, status = line.strip().rpartition(": ")
            if not name:
                continue
            if functions is not None and function_of(name) not in functions:
                continue
            seen.add(function_of(name))
            counts[status] = counts.get(status, 0) + 1
            if status in ("survived", "no tests"):
                removed, added = _diff(name, work)
                survivors.append((name, removed, added))
        return counts, survivors, seen


def main(filters: list[str]) -> int:
    table = []
    unexplained = 0
    report: dict[str, object] = {}
    for module, tests, functions in MODULES:
        if filters and not any(f in module for f in filters):
            continue
        counts, survivors, seen = run(module, tests, functions)
        missing = sorted((functions or frozenset()) - seen)
        if missing:  # renamed or gone: the score would silently leave them out
            print(f"NO MUTANTS in {module} for {', '.join(missing)}")
            unexplained += len(missing)
        total = sum(counts.values())
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        equivalent = [s for s in survivors if (module, s[1], s[2]) in EQUIVALENT]
        live = [s for s in survivors if (module, s[1], s[2]) not in EQUIVALENT]
        unexplained += len(live)
        score = killed / max(1, total - len(equivalent))
        table.append((module, total, killed, len(equivalent), len(live), score))
        report[module] = {"counts": counts, "survivors": live}
        for name, removed, added in live:
            print(f"SURVIVED {name}\n  - {removed}\n  + {added}")
    print(f"\n{'module':36} {'mutants':>7} {'killed':>7} {'equiv':>6} {'alive':>6} {'score':>6}")
    for module, total, killed, equivalent, alive, score in table:
        print(f"{module:36} {total:7} {killed:7} {equivalent:6} {alive:6} {score:6.0%}")
    (ROOT / ".mutmut-report.json").write_text(json.dumps(report, indent=1))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
