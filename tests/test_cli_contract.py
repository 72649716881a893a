"""One error contract for every `expblip` subcommand (lavis_ext.cli): bad input -> exit 2 and
`expblip <command>: error: ...` on stderr, no traceback; every flag has help."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lavis_ext import cli, errors

REPO = Path(__file__).resolve().parents[1]


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    missing = str(tmp / "missing.json")
    settings = tmp / "demo_work" / "demo_settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"profile": "from another run"}))
    return {
        "prepare": ["prepare", "bp4d", "--root", str(tmp / "no_such_dir"), "--out", str(tmp)],
        "make-synthetic": ["make-synthetic", "bp4d", "--out", str(tmp / "s"), "--n", "2",
                           "--variant", "no-such-variant"],
        "synthesize": ["synthesize", "--kind", "au-rule", "--ann", missing, "--out",
                       str(tmp / "out.json")],
        "import-captions": ["import-captions", "--kind", "Not A Kind", "--from", missing,
                            "--ann", missing, "--out", str(tmp / "o.json")],
        "evaluate": ["evaluate", "--pred", missing, "--ann", missing],
        "pseudo-caption": ["pseudo-caption", "--model", "exp_blip", "--ann", missing,
                           "--images", str(tmp / "no_such_dir"), "--out", str(tmp / "o.json")],
        "describe": ["describe", str(tmp / "no_such_photo.jpg"), "--model",
                     str(tmp / "no_such_checkpoint.pth")],
        "explain": ["explain", str(tmp / "no_such_photo.jpg"), "--out", str(tmp / "x"),
                    "--model", str(tmp / "no_such_checkpoint.pth")],
        "serve": ["serve", "--port", "70000"],
        "rate": ["rate", "--report", "--out", str(tmp / "no_ratings.sqlite")],
        "pipeline": ["pipeline", "--config", str(tmp / "no_such_config.yaml")],
        "demo": ["demo", "--quick", "--workdir", str(settings.parent)],
        "export-hf": ["export-hf", "--model", str(tmp / "m.pth"), "--out", str(tmp / "hf"),
                      "--max-shard-size", "0GB"],
        "weights": ["weights", "no-such-part"],
    }


def test_every_subcommand_has_a_bad_input_case(tmp_path):
    missing = sorted(set(cli.SUBCOMMANDS) - set(_bad_inputs(tmp_path)))
    assert not missing, f"add a bad-input case for {missing}"


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_bad_input_exits_2_with_the_prefix_and_no_traceback(command, tmp_path, capsys):
    argv = _bad_inputs(tmp_path)[command]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == errors.EXIT_USAGE, err
    assert err.startswith(f"expblip {command}: error: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_missing_required_argument_is_a_usage_error(command, capsys):
    code = cli.main([command, "--no-such-flag"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_USAGE
    assert f"expblip {command}: error: " in err and "Traceback" not in err


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_every_flag_has_help(command):
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"expblip {command}: {action.option_strings or action.dest} has no help"


def test_shared_flags_mean_the_same_everywhere():
    """--concurrency has one default; --openai-base-url is an alias of --base-url."""
    defaults = set()
    for command in cli.SUBCOMMANDS:
        parser = cli.build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for action in sub.choices[command]._actions:
            if "--concurrency" in action.option_strings:
                defaults.add(action.default)
            if "--openai-base-url" in action.option_strings:
                assert action.dest == "base_url"
    assert defaults == {8}
    args = cli.build_parser("evaluate").parse_args(
        ["evaluate", "--pred", "p", "--ann", "a", "--openai-base-url", "http://h/v1"])
    assert args.base_url == "http://h/v1"


def test_runtime_failure_exits_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("the disk caught fire")

    import lavis_ext.data.prepare as prepare

    monkeypatch.setattr(prepare, "run", boom)
    argv = ["prepare", "bp4d", "--root", "r", "--out", "o"]
    assert cli.main(argv) == errors.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("expblip prepare: error: RuntimeError: the disk caught fire")
    assert "Traceback" not in err and "--debug" in err
    assert cli.main(["--debug", *argv]) == errors.EXIT_FAILURE
    assert "Traceback" in capsys.readouterr().err


def test_nothing_succeeded_exits_3(capsys):
    with pytest.raises(errors.NothingSucceeded) as info:
        errors.check_partial("describe", succeeded=0, failed=4, what="files")
    assert cli.classify(info.value) == (errors.EXIT_NOTHING_DONE, "all 4 files failed")
    assert errors.check_partial("describe", succeeded=1, failed=3, what="files") == 0
    assert "3 of 4 files failed" in capsys.readouterr().err


def test_broken_pipe_exits_quietly(tmp_path):
    """`expblip --help | head -1`: no traceback when the reader goes away."""
    code = ("import sys, lavis_ext.cli as c\n"
            "c.importlib.import_module('lavis_ext.data.synthetic.cli').run = "
            "lambda a: [print('x' * 1000, flush=True) for _ in range(10000)] and 0\n"
            "sys.exit(c.main(['make-synthetic', 'bp4d', '--out', 'o']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == errors.EXIT_BROKEN_PIPE, err
    assert "Traceback" not in err


LIGHT_COMMANDS = {
    "--help": ["--help"],
    "prepare": ["prepare", "bp4d", "--root", "{tmp}/none", "--out", "{tmp}/out"],
    "make-synthetic": ["make-synthetic", "bp4d", "--out", "{tmp}/syn", "--n", "1",
                       "--no-progress"],
    "synthesize": ["synthesize", "--kind", "au-rule", "--ann", "{tmp}/none.json", "--out",
                   "{tmp}/o.json"],
    "evaluate": ["evaluate", "--pred", "{tmp}/none.json", "--ann", "{tmp}/none.json"],
}


@pytest.mark.parametrize("name", sorted(LIGHT_COMMANDS))
def test_light_commands_never_import_torch_or_lavis(name, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in LIGHT_COMMANDS[name]]
    code = ("import sys\nfrom lavis_ext.cli import main\ncode = main(%r)\n"
            "heavy = sorted(m for m in ('torch', 'lavis', 'transformers') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n" % argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "HEAVY []" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-2000:])


# --- bad input (exit 2) versus our own bugs (exit 1) -------------------------------------------

def _record(image_id: str, **fields) -> dict:
    from lavis_ext.data.records import new_record

    return new_record(f"{image_id}.jpg", image_id, "bp4d", "test", subject="F001", **fields)


def test_a_plain_value_error_inside_the_package_is_a_failure_not_bad_input(monkeypatch, capsys):
    """A ValueError that lavis_ext raises for an internal invariant is our bug: exit 1 and the
    --debug hint, not exit 2 as if the user had typed something wrong."""
    import lavis_ext.data.prepare as prepare
    from lavis_ext.data import splits

    monkeypatch.setattr(prepare, "run", lambda args: splits.random_split([], 1.5, seed=0))
    argv = ["prepare", "bp4d", "--root", "r", "--out", "o"]
    assert cli.main(argv) == errors.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("expblip prepare: error: ValueError: test fraction must be in"), err
    assert "--debug" in err and "EXPBLIP_DEBUG=1" in err and "Traceback" not in err
    assert cli.main(["--debug", *argv]) == errors.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err and "splits.py" in err, err
    assert "rerun with --debug" not in err  # it is on already


def test_a_key_error_inside_the_package_is_a_failure_not_bad_input(monkeypatch, capsys):
    """The shape of the `expblip pipeline: error: au_blip` bug: a dict lookup in our code."""
    import lavis_ext.data.prepare as prepare
    from lavis_ext.data import splits

    monkeypatch.setattr(prepare, "run", lambda args: splits.apply_split("bp4d", [{"id": 1}]))
    assert cli.main(["prepare", "bp4d", "--root", "r", "--out", "o"]) == errors.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("expblip prepare: error: KeyError: 'subject'"), err
    assert "--debug" in err and "Traceback" not in err


def test_expblip_debug_env_shows_the_traceback_of_a_failure(tmp_path):
    code = ("import sys, lavis_ext, lavis_ext.cli as c\n"
            "from lavis_ext.data import splits\n"
            "print('LAVIS_EXT', lavis_ext.__file__, file=sys.stderr)\n"
            "c.importlib.import_module('lavis_ext.data.prepare').run = "
            "lambda a: splits.random_split([], 2.0, seed=0)\n"
            "sys.exit(c.main(['prepare', 'bp4d', '--root', 'r', '--out', 'o']))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for debug, traceback_shown in (("0", False), ("1", True)):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120, env={**env, "EXPBLIP_DEBUG": debug})
        assert f"LAVIS_EXT {REPO / 'lavis_ext' / '__init__.py'}" in proc.stderr, proc.stderr
        assert proc.returncode == errors.EXIT_FAILURE, proc.stderr
        assert ("Traceback" in proc.stderr) is traceback_shown, proc.stderr
        assert "expblip prepare: error: ValueError: test fraction" in proc.stderr


def test_a_malformed_dataset_file_is_bad_input_naming_the_file(tmp_path, capsys):
    labels = tmp_path / "bp4d" / "AUCoding" / "AU_OCC"
    labels.mkdir(parents=True)
    (labels / "F001_T1.csv").write_text("frame,smile\n1,0\n")
    code = cli.main(["prepare", "bp4d", "--root", str(tmp_path / "bp4d"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == errors.EXIT_USAGE, err
    assert err.startswith("expblip prepare: error: ") and "F001_T1.csv:1: header column 2" in err
    assert "Traceback" not in err and "--debug" not in err


def test_a_malformed_prediction_file_is_bad_input_naming_the_file(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([_record("a", caption=["The person smiles."])]))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": "a"}]))  # no caption
    code = cli.main(["evaluate", "--pred", str(pred), "--ann", str(ann), "--encoder", "none",
                     "--no-meteor"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_USAGE, err
    assert err.startswith("expblip evaluate: error: ") and str(pred) in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("loader, text", [("records", "[{\"image_id\": 1}]"),
                                          ("records", "{\"not\": \"a list\"}"),
                                          ("prompt", "system: hi\n")])
def test_loaders_raise_input_errors(loader, text, tmp_path):
    """What the loaders refuse is the user's to fix (an InputError) and names the file."""
    from lavis_ext.captions import prompts
    from lavis_ext.data.records import load_records

    path = tmp_path / ("records.json" if loader == "records" else "au_caption.yaml")
    path.write_text(text)
    with pytest.raises(errors.InputError, match=str(path)) as info:
        load_records(path) if loader == "records" else prompts.load_prompt("au_caption",
                                                                            tmp_path)
    assert cli.classify(info.value)[0] == errors.EXIT_USAGE


def test_data_layer_error_classes_are_input_errors():
    from lavis_ext.data.readers.common import DatasetFormatError
    from lavis_ext.data.records import RecordError
    from lavis_ext.metrics.evaluate import EvaluationError

    for cls in (RecordError, DatasetFormatError, EvaluationError):
        assert issubclass(cls, errors.InputError) and issubclass(cls, ValueError), cls


def test_an_unknown_name_the_user_typed_is_bad_input(tmp_path, capsys):
    """An unknown AU subset name (looked up like a dict key) exits 2 and names the flag."""
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([_record("a", caption=["The person smiles."])]))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": "a", "caption": "smiles"}]))
    code = cli.main(["evaluate", "--pred", str(pred), "--ann", str(ann), "--encoder", "none",
                     "--no-meteor", "--au-subset", "no-such-subset"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_USAGE, err
    assert err.startswith("expblip evaluate: error: --au-subset: AU 'no-such-subset' is not"), err
    assert "Traceback" not in err


def test_unknown_names_are_missing_entry_errors_and_still_key_errors(tmp_path):
    from lavis_ext import facs
    from lavis_ext.captions import rules

    with pytest.raises(KeyError) as info:
        facs.au_name(99)
    assert isinstance(info.value, errors.MissingEntryError)
    assert str(info.value).startswith("AU 99 is not one of")  # not quoted like a KeyError
    assert cli.classify(info.value)[0] == errors.EXIT_USAGE
    (tmp_path / "rules.yaml").write_text("au_template: 'The person {actions}.'\n")
    with pytest.raises(KeyError, match="rules.yaml has no '") as info:
        rules.emotion_caption(["happiness"], prompt_dir=tmp_path)
    assert cli.classify(info.value)[0] == errors.EXIT_USAGE
