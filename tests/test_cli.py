import importlib

from lavis_ext.cli import SUBCOMMANDS, main


def test_every_subcommand_module_exists_and_has_help(capsys):
    for name, (module, _) in SUBCOMMANDS.items():
        loaded = importlib.import_module(module)
        assert callable(loaded.add_arguments) and callable(loaded.run), module
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "usage: expblip " + name in out and "exit codes:" in out


def test_unknown_command_is_an_error(capsys):
    assert main(["train-everything"]) == 2
    assert "expblip: error: argument COMMAND: invalid choice" in capsys.readouterr().err
