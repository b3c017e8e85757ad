"""``python -m skorch_loadfix``, run as users run it. (``demo`` runs on every cell from nox.)"""

from conftest import run_python

STATUS = "import sys; from skorch_loadfix.__main__ import main; sys.exit(main(sys.argv[1:]))"


def test_status_lists_what_apply_patches_and_the_activation_state():
    done = run_python(STATUS)
    assert done.returncode == 0, done.stderr
    assert "apply() patches:\n  NeuralNet.__setstate__: " in done.stdout
    assert "SKORCH_LOADFIX='': auto-activation off" in done.stdout
    assert "skorch_loadfix.pth: " in done.stdout


def test_unknown_command_is_a_usage_error():
    done = run_python(STATUS, "frobnicate")
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr
