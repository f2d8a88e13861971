"""The `reviewops` command answers bad input with a clear message and an exit code, never a traceback."""

from typer.testing import CliRunner

from pipelines.app.cli import app

runner = CliRunner()


def test_generate_refuses_zero_photos_instead_of_falling_back_to_the_profile(tmp_path):
    res = runner.invoke(app, ["generate", "--n", "0", "--batch", "z", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "n must be positive" in res.output
    assert not any(tmp_path.iterdir())


def test_generate_refuses_unknown_shift_and_profile(tmp_path):
    res = runner.invoke(app, ["generate", "--n", "2", "--batch", "z", "--out", str(tmp_path), "--shift", "foo=1"])
    assert res.exit_code == 2 and "unknown shift knob" in res.output
    res = runner.invoke(app, ["generate", "--n", "2", "--batch", "z", "--out", str(tmp_path), "--profile", "huge"])
    assert res.exit_code == 2 and "unknown profile" in res.output


def test_commands_on_a_directory_without_a_batch(tmp_path):
    for cmd in (["validate", str(tmp_path / "missing")], ["version", str(tmp_path / "missing")],
                ["contact-sheet", str(tmp_path)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, (cmd, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (cmd, res.exception)
