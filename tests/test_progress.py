"""Progress bars (netdsl/progress.py): drawn on stderr only on a terminal or when
NETDSL_PROGRESS=1 forces them; otherwise nothing is printed and rich is not imported."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl import progress

ROOT = Path(__file__).resolve().parent.parent

SMALL = """\
network Small {
    input x: f32[1, 3, 16, 16]
    output logits = x -> conv: Conv2d(4, 3, padding = 1) -> ReLU -> Flatten -> fc: Linear(10)
}
"""

BAR_SCRIPT = """\
import sys
from netdsl.progress import progress_bar
with progress_bar(5 * 2 ** 20, "writing weights") as bar:
    for _ in range(5):
        bar.advance(2 ** 20)
with progress_bar(4, "steps", unit="runs") as bar:
    for _ in range(4):
        bar.advance(1)
print("done")
print("rich" in sys.modules, file=sys.stdout)
"""


def python(args, env_extra, **kw):
    env = {k: v for k, v in os.environ.items() if k != "NETDSL_PROGRESS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_enabled_follows_the_stream_and_the_variable(monkeypatch):
    monkeypatch.delenv("NETDSL_PROGRESS", raising=False)
    assert progress.enabled(FakeTTY()) is True
    assert progress.enabled(io.StringIO()) is False
    monkeypatch.setenv("NETDSL_PROGRESS", "0")
    assert progress.enabled(FakeTTY()) is False
    monkeypatch.setenv("NETDSL_PROGRESS", "1")
    assert progress.enabled(io.StringIO()) is True


def test_no_bar_and_no_rich_when_stderr_is_not_a_terminal():
    r = python(["-c", BAR_SCRIPT], {})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout == "done\nFalse\n"
    r = python(["-c", BAR_SCRIPT], {"NETDSL_PROGRESS": "0"})
    assert r.stderr == "" and r.stdout == "done\nFalse\n"


def test_forced_bar_goes_to_stderr_only():
    r = python(["-c", BAR_SCRIPT], {"NETDSL_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\nTrue\n"          # stdout untouched by the bar
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", r.stderr)
    assert "writing weights" in err and "100%" in err and "5.2/5.2 MB" in err
    assert "steps" in err and "4/4 runs" in err


def test_a_bar_that_fails_inside_lets_the_error_through(monkeypatch):
    monkeypatch.setenv("NETDSL_PROGRESS", "1")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with pytest.raises(KeyError):
        with progress.progress_bar(3, "x", unit="runs") as bar:
            bar.advance(1)
            raise KeyError("boom")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    p = tmp_path_factory.mktemp("progress") / "small.net"
    p.write_text(SMALL)
    return p


def _mask(text):
    return re.sub(r"[0-9.]+ ms", "T ms", text)


def test_run_repeat_shows_a_bar_only_when_forced(spec):
    args = ["-m", "netdsl", "run", str(spec), "--repeat", "5"]
    plain = python(args, {})
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr == ""                   # as before: no bar in a pipe
    assert "latency" in plain.stdout and "(median of 5 runs)" in plain.stdout
    forced = python(args, {"NETDSL_PROGRESS": "1"})
    assert forced.returncode == 0, forced.stderr
    assert _mask(forced.stdout) == _mask(plain.stdout)
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", forced.stderr)
    assert "timed runs" in err and "5/5 runs" in err
    # without --repeat the number of runs is not known beforehand: no bar
    free = python(["-m", "netdsl", "run", str(spec)], {"NETDSL_PROGRESS": "1"})
    assert free.returncode == 0 and free.stderr == ""


def test_run_help_mentions_the_bar():
    r = python(["-m", "netdsl", "run", "--help"], {})
    assert r.returncode == 0 and "progress bar" in r.stdout and "NETDSL_PROGRESS=0" in r.stdout
