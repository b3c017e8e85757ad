"""What a user reads: the demo's lines, the status verdict, load()'s errors, the CLI's help.

Each message is produced by the real thing (a real torch error, a real refusal, a real
command in a fresh interpreter), and checked against what that thing did.
"""

import argparse
import io
import os
import pickle
import re
import subprocess
import sys
import traceback

import pytest
import torch
from conftest import run_python
from test_loading import expected_unpatched

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.__main__ import make_parser
from skorch_loadfix.demo import NEXT_STEP, first_sentence
from skorch_loadfix.demo_model import Model
from skorch_loadfix.formats import WRITERS
from skorch_loadfix.verdict import WRITTEN_BY, Verdict

CLI = "import sys; from skorch_loadfix.__main__ import main; sys.exit(main(sys.argv[1:]))"


def weights_only_error() -> str:
    """torch's own message for a weights-only load of a module: several sentences, long."""
    buffer = io.BytesIO()
    torch.save(Model(), buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError) as raised:
        torch.load(buffer, weights_only=True)
    return str(raised.value)


def test_first_sentence_is_whole_and_ends_where_the_sentence_does():
    message = weights_only_error()
    sentence = first_sentence(message)
    assert sentence == "Weights only load failed."
    assert message.startswith(sentence) and len(message) > 100  # what a cut at 100 chars hit


def test_first_sentence_never_cuts_a_long_sentence():
    line = "a sentence of one line that runs on " * 5 + "without a full stop"
    assert first_sentence(f"{line}\nsecond line") == line  # whole, however long
    assert first_sentence("torch.load failed. Next.") == "torch.load failed."  # dotted names


def test_demo_ends_each_error_on_a_whole_sentence_then_gives_the_next_step():
    done = subprocess.run(
        [sys.executable, "-m", "skorch_loadfix", "demo"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    errors = [line.split(": ", 1)[1] for line in lines if "FAILS" in line or "WARNS" in line]
    for error in errors:
        assert error.endswith(".") or " " not in error, error  # a sentence, not a cut
    needed = any(expected_unpatched(writer) != "ok" for writer in WRITERS)
    assert (NEXT_STEP in lines) is needed
    assert lines[-1].startswith("Next step:") or lines[-1].startswith("Unpatched, this skorch")


OUTCOME = {"ok": "loads", "warns": "warns", "fails": "fails"}


def measured_unpatched() -> dict[str, str]:
    return {writer: OUTCOME[expected_unpatched(writer)] for writer in WRITERS}


def status_lines(**env: str) -> list[str]:
    done = run_python(CLI, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_status_gives_the_verdict_for_this_pair_and_the_next_step():
    lines = status_lines()
    own = "pickle" if expected_unpatched("pickle") == "ok" else "torch.save"
    verdict = Verdict(None, own, measured_unpatched())  # type: ignore[arg-type]
    assert lines[1] == f"Verdict: {verdict.line}."
    assert lines[2] == verdict.next_step
    if "fails" in verdict.outcomes.values():
        assert "apply()" in lines[2] and "SKORCH_LOADFIX=1" in lines[2]


def test_status_verdict_under_auto_activation_says_patched_and_loads():
    lines = status_lines(SKORCH_LOADFIX="1")
    assert lines[1].startswith("Verdict: patched by SKORCH_LOADFIX=1, this skorch loads its own")
    assert lines[2].startswith("Next step: nothing to fix for files you trust")


@pytest.mark.parametrize(
    "outcomes, expected",
    [
        (
            {"torch.save": "fails", "pickle": "fails"},
            "unpatched, this skorch cannot unpickle its own nets on this torch "
            "(nor those written by skorch >= 1.2)",
        ),
        (
            {"torch.save": "loads", "pickle": "fails"},
            "unpatched, this skorch loads its own nets on this torch, "
            "but cannot unpickle those written by skorch >= 1.2",
        ),
        (
            {"torch.save": "warns", "pickle": "fails"},
            "unpatched, this skorch warns (FutureWarning) unpickling its own nets on this torch, "
            "but cannot unpickle those written by skorch >= 1.2",
        ),
    ],
)
def test_verdict_line_for_each_outcome(outcomes, expected):
    assert Verdict(None, "torch.save", outcomes).line == expected
    assert "apply()" in Verdict(None, "torch.save", outcomes).next_step
    assert set(WRITTEN_BY) == set(WRITERS)


def refusal(*objects: object) -> UntrustedPickleError:
    with pytest.raises(UntrustedPickleError) as raised:
        skorch_loadfix.load(io.BytesIO(pickle.dumps(objects)))
    return raised.value


def test_summary_is_one_sentence_for_a_user_and_refused_is_unchanged():
    error = refusal(os.system)
    assert set(error.refused) == {f"{os.system.__module__}.system"}
    assert error.summary == (
        "The file was not loaded: it names objects this application does not allow "
        f"({os.system.__module__}.system)."
    )
    for internal in ("skorch_loadfix", "add_safe_globals", "\n"):
        assert internal not in error.summary and (internal in str(error) or internal == "\n")


def test_summary_names_three_and_counts_the_rest():
    import subprocess as sp

    error = refusal(os.system, sp.call, sp.Popen, eval, exec)
    assert len(error.refused) == 5
    names = sorted(error.refused)
    assert f"({', '.join(names[:3])} and 2 more)." in error.summary


def documented_raises() -> set[str]:
    """The exception names in load()'s Raises section."""
    section = skorch_loadfix.load.__doc__.split("Raises:", 1)[1]  # type: ignore[union-attr]
    return set(re.findall(r"^\s{8}([\w.]+):", section, flags=re.MULTILINE))


TRUNCATED = pickle.dumps(list(range(100)))[:-20]  # a pickle cut short: EOFError inside


def raised_by_load(tmp_path) -> dict[str, BaseException]:
    """Each way load() fails, each by the real thing."""
    cases = {
        "UntrustedPickleError": lambda: skorch_loadfix.load(io.BytesIO(pickle.dumps(os.system))),
        "pickle.UnpicklingError": lambda: skorch_loadfix.load(io.BytesIO(TRUNCATED)),
        "OSError": lambda: skorch_loadfix.load(tmp_path / "missing.pkl"),
        "TypeError": lambda: skorch_loadfix.load(io.StringIO("text")),
        "ValueError": lambda: skorch_loadfix.load(io.BytesIO(b""), allow=["os.system"]),
    }
    raised = {}
    for name, call in cases.items():
        with pytest.raises(Exception) as caught:
            call()
        raised[name] = caught.value
    return raised


def test_load_raises_exactly_what_its_docstring_says(tmp_path):
    raised = raised_by_load(tmp_path)
    assert documented_raises() == set(raised)
    for name, error in raised.items():
        expected = {"pickle.UnpicklingError": pickle.UnpicklingError}.get(name) or getattr(
            skorch_loadfix, name, None
        )
        assert isinstance(error, expected or eval(name)), (name, error)
    assert not isinstance(raised["pickle.UnpicklingError"], UntrustedPickleError)


def test_an_unreadable_file_is_one_traceback_not_two(tmp_path):
    error = raised_by_load(tmp_path)["pickle.UnpicklingError"]
    text = "".join(traceback.format_exception(error))
    assert "direct cause" not in text and "During handling" not in text
    assert "not a readable pickle (EOFError" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        make_parser().parse_args(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"skorch-loadfix (\d+\.\d+\.\d+.*|\(not installed\))\n", out), out


def arguments(parser):
    """Every argument of the parser and of its commands, with the command it belongs to."""
    for action in parser._actions:
        yield parser.prog, action
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from arguments(command)


def test_every_argument_has_help():
    missing = [
        f"{prog}: {action.dest}" for prog, action in arguments(make_parser()) if not action.help
    ]
    assert missing == []
    assert len(list(arguments(make_parser()))) > 10  # the walk reached the commands


def test_a_reader_that_stops_early_gets_no_traceback():
    """``python -m skorch_loadfix | head -3``: the status is longer than what head reads."""
    done = subprocess.run(
        f"{sys.executable} -m skorch_loadfix | head -1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert done.stdout.startswith("skorch ") and done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
