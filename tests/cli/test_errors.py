"""The command line's one contract: CapsLab errors are one red line and exit code 2, anything
else keeps its traceback; every command goes through it; --debug, --version, --json."""

import json

import pytest
import typer
from typer.testing import CliRunner

from capslab.cli.main import all_command_infos, app
from capslab.cli.output import report_errors
from capslab.errors import CapsLabError, ConfigError, DownloadError

runner = CliRunner()


def test_capslab_errors_become_one_line_and_exit_code_2(capsys):
    @report_errors
    def offline():
        raise DownloadError("could not download train_32x32.mat\n(offline?)")

    with pytest.raises(typer.Exit) as exit_info:
        offline()
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not download train_32x32.mat (offline?)" in err


@pytest.mark.parametrize("bug", [ZeroDivisionError("a bug"), KeyError("key"), ValueError("shape"),
                                 RuntimeError("CUDA out of memory")])
def test_other_exceptions_keep_their_traceback(bug):
    @report_errors
    def command():
        raise bug

    with pytest.raises(type(bug)):
        command()


def test_every_error_class_is_a_capslab_error():
    import inspect

    import capslab.errors as errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 18 and all(issubclass(cls, CapsLabError) for cls in classes)
    assert issubclass(errors.ConfigError, ValueError)  # callers may catch the built-in type


def test_every_command_goes_through_the_handler():
    infos = list(all_command_infos(app))
    assert len(infos) >= 14
    for info in infos:
        assert getattr(info.callback, "__capslab_errors__", False), info.callback


def _commands(typer_app, prefix=()):
    for info in typer_app.registered_commands:
        yield (*prefix, info.name or info.callback.__name__), info.callback
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name))


def test_every_command_has_json_output():
    import inspect

    missing = [name for name, cb in _commands(app)
               if "as_json" not in inspect.signature(cb).parameters]
    assert missing == []


def test_debug_shows_the_traceback_and_version_prints():
    res = runner.invoke(app, ["hw"])
    assert res.exit_code == 2 and "give exactly one of" in res.output
    res = runner.invoke(app, ["--debug", "hw"])
    assert isinstance(res.exception, ConfigError)  # raised, so the traceback is shown
    res = runner.invoke(app, ["hw"])  # --debug does not stick to later commands
    assert res.exit_code == 2
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("capslab ")


def test_invalid_search_settings_write_nothing(tmp_path):
    out = tmp_path / "search"
    res = runner.invoke(app, ["search", "run", "--policy-opt", "typo=1", "--out", str(out)])
    assert res.exit_code == 2 and "typo" in res.output and "valid options" in res.output
    res = runner.invoke(app, ["search", "run", "--space", "kernelz=3", "--out", str(out)])
    assert res.exit_code == 2 and "kernelz" in res.output
    res = runner.invoke(app, ["study", "pcc", "--policy-opt", "typo=1", "--out", str(out)])
    assert res.exit_code == 2 and "typo" in res.output
    assert not out.exists()


def test_json_output_is_only_json():
    res = runner.invoke(app, ["hw", "--model", "capsnet", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["energy_mJ"] > 0


def test_missing_data_stops_a_search_before_it_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPSLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "search"
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["search", "run", "--dataset", "svhn", "--data-dir", str(empty),
                              "--out", str(out)])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["study", "pcc", "--dataset", "svhn", "--data-dir", str(empty),
                              "--out", str(out)])
    assert res.exit_code == 2 and "not found" in res.output
    assert not out.exists()


def test_the_console_commands_version_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['capslab', '--version']; from capslab.cli.entry import main; "
            "main(); print('torch' in sys.modules, 'capslab.cli.main' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [f"capslab {__import__('capslab').__version__}", "False False"]
