"""Run calls that might crash the interpreter in a child process.

A kernel handed a bad buffer can segfault, and a segfault inside pytest ends the whole run
with no report. :func:`run_cases` instead runs named cases (zero-argument callables in a
test module's ``CASES`` dict) in a child Python that imports the same fastconv, and reports
for each one what it returned or raised, or that it killed the child (signal, exit code)
or hung. Cases after a crash run in a fresh child, so one crash costs one case only.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import fastconv

TESTS_DIR = Path(__file__).resolve().parent

_CHILD = r"""
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
for case_id in json.loads(sys.stdin.read()):
    print(json.dumps({"start": case_id}), flush=True)
    try:
        value = module.CASES[case_id]()
        report = {"id": case_id, "returned": type(value).__name__}
    except BaseException as exc:
        report = {"id": case_id, "mro": [c.__name__ for c in type(exc).__mro__],
                  "message": str(exc)}
    print(json.dumps(report), flush=True)
"""


def child_env(**extra):
    """Environment for a child Python that imports this fastconv and the tests directory."""
    package_root = str(Path(fastconv.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, str(TESTS_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


class Outcome:
    """What one case did: ``raised`` (exception class names, MRO order) and ``message``,
    ``returned`` (the result's type name), or ``crashed`` (a description)."""

    def __init__(self, report=None, crashed=None):
        report = report or {}
        self.raised = report.get("mro")
        self.message = report.get("message", "")
        self.returned = report.get("returned")
        self.crashed = crashed

    def is_a(self, exc_type):
        return self.raised is not None and exc_type.__name__ in self.raised

    def __repr__(self):
        if self.crashed:
            return f"<crashed: {self.crashed}>"
        if self.raised:
            return f"<raised {self.raised[0]}: {self.message}>"
        return f"<returned {self.returned}>"


def _describe(returncode):
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def run_cases(module_name, case_ids, timeout=120):
    """Run ``module_name.CASES[id]()`` for each id in child processes; ``{id: Outcome}``."""
    outcomes = {}
    remaining = list(case_ids)
    while remaining:
        started = None
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, module_name],
                                  input=json.dumps(remaining), capture_output=True, text=True,
                                  env=child_env(), timeout=timeout)
            stdout, crash = proc.stdout, (None if proc.returncode == 0
                                          else _describe(proc.returncode))
            detail = proc.stderr[-2000:]
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            crash, detail = f"hung for more than {timeout} s", ""
        for line in stdout.splitlines():
            if not line.startswith("{"):
                continue
            report = json.loads(line)
            if "start" in report:
                started = report["start"]
            else:
                outcomes[report["id"]] = Outcome(report)
                started = None
        if started is not None:
            outcomes[started] = Outcome(crashed=f"{crash}\n{detail}")
        elif crash is not None:
            raise RuntimeError(f"the case runner failed outside any case: {crash}\n{detail}")
        remaining = [c for c in remaining if c not in outcomes]
    return outcomes
