import importlib

import pytest

from lavis_ext.cli import SUBCOMMANDS, main


def test_every_subcommand_module_exists_and_has_help(capsys):
    for name, (module, _) in SUBCOMMANDS.items():
        loaded = importlib.import_module(module)
        assert callable(loaded.add_arguments) and callable(loaded.run), module
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: expblip " + name in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-everything"])
    assert exit_info.value.code == 2
