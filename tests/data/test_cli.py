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


def test_an_invalid_params_yaml_is_one_clear_error_line_not_a_traceback(tmp_path):
    """The installed `reviewops` (its entry point, as users run it) names the file and the bad key, exit 2."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    raw = yaml.safe_load(open("params.yaml"))
    raw["labels"]["centering_tolerance"] = 7
    raw["serving"].pop("port")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    for command in (["gate"], ["reviewer"], ["real-photos"], ["reference"]):
        done = subprocess.run([str(Path(sys.executable).parent / "reviewops"), *command], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        err = done.stderr.strip()
        assert "Traceback" not in err and "╭" not in err and len(err.splitlines()) == 1, err
        assert "params.yaml is not valid" in err and "labels.centering_tolerance: Input should be less than 0.5" in err
        assert "serving.port: Field required" in err
    (tmp_path / "params.yaml").write_text("seed: [unclosed")
    done = subprocess.run([str(Path(sys.executable).parent / "reviewops"), "gate"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "is not valid YAML" in done.stderr and "Traceback" not in done.stderr
