"""The settings table and its loaders: precedence, types, and errors that say where."""

from __future__ import annotations

import pytest

from arbiter.config import loader as config
from arbiter.config.loader import Value
from arbiter.errors import ConfigError
from arbiter.config.settings import SETTINGS
from conftest import run_arbiter


def build(cli=None, env=None, **_):
    cli_values = {key: Value(raw, f"option --{key}") for key, raw in (cli or {}).items()}
    return config.build(cli_values, env or {})


def test_defaults_follow_gunicorn():
    cfg = build()
    assert cfg.workers == 1
    assert cfg.bind == ("127.0.0.1:8000",)
    assert cfg.timeout == 30 and cfg.graceful_timeout == 30 and cfg.keepalive == 2
    assert cfg.backlog == 2048 and cfg.worker_connections == 1000
    assert (cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size) == (4094, 100, 8190)
    assert cfg.worker_class == "auto"


def test_precedence_defaults_file_env_cli(tmp_path):
    path = tmp_path / "arbiter.toml"
    path.write_text('workers = 3\ntimeout = 10\nkeepalive = 7\n')
    env = {"WEB_CONCURRENCY": "9", "ARBITER_TIMEOUT": "11", "ARBITER_CONFIG": str(path)}
    cfg = build(cli={"keepalive": "8"}, env=env)
    assert cfg.workers == 3  # the file beats WEB_CONCURRENCY
    assert cfg.timeout == 11  # ARBITER_* beats the file
    assert cfg.keepalive == 8  # the command line beats everything
    assert build(env={"WEB_CONCURRENCY": "5"}).workers == 5


def test_toml_unknown_key_names_key_file_and_line(tmp_path):
    path = tmp_path / "arbiter.toml"
    path.write_text('# settings\nworkers = 2\n\nwrokers = 3\n')
    with pytest.raises(ConfigError) as info:
        build(cli={"config": str(path)})
    assert str(info.value) == f"{path}:4: unknown setting 'wrokers'; did you mean 'workers'?"


def test_toml_ill_typed_value_names_what_was_expected(tmp_path):
    path = tmp_path / "arbiter.toml"
    path.write_text('timeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        build(cli={"config": str(path)})
    assert str(info.value) == f"{path}:1: 'timeout' must be a number of seconds, got 'soon'"


def test_toml_syntax_error(tmp_path):
    path = tmp_path / "arbiter.toml"
    path.write_text('workers = = 2\n')
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 1"):
        build(cli={"config": str(path)})


def test_python_config_values_hooks_and_errors(tmp_path):
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(
        "import multiprocessing\n"
        "from os.path import join\n"
        "bind = '127.0.0.1:9000'\n"
        "workers = 2\n"
        "worker_class = 'uvicorn.workers.UvicornWorker'\n"
        "preload = True\n"
        "_helper = 5\n"
        "def post_fork(server, worker):\n"
        "    pass\n"
    )
    cfg = build(cli={"config": str(path)})
    assert cfg.bind == ("127.0.0.1:9000",) and cfg.workers == 2 and cfg.preload_app is True
    assert callable(cfg.post_fork) and cfg.hook("post_fork") is cfg.post_fork
    path.write_text("workers = 2\n\ndef post_frok(server, worker):\n    pass\n")
    with pytest.raises(ConfigError) as info:
        build(cli={"config": str(path)})
    assert str(info.value) == f"{path}:3: unknown setting 'post_frok'; did you mean 'post_fork'?"
    path.write_text("workers = 'many'\n")
    with pytest.raises(ConfigError, match=r":1: 'workers' must be an integer, got 'many'"):
        build(cli={"config": str(path)})


def test_unknown_arbiter_environment_variable_is_a_warning_not_a_stop():
    # An unrelated tool's ARBITER_URL must not stop the service; a typo is still pointed out.
    cfg = build(env={"ARBITER_WORKRES": "2", "ARBITER_URL": "http://x", "ARBITER_TOKEN": "t",
                     "ARBITER_SOCKET": "/s"})
    assert cfg.extras.warnings == (
        "environment variable ARBITER_URL: unknown setting 'URL'; ignored",
        "environment variable ARBITER_WORKRES: unknown setting 'WORKRES'; did you mean 'workers'?; ignored",
    )


def test_sync_with_threads_means_gthread():
    assert build(cli={"worker_class": "sync", "threads": "4"}).worker_class == "gthread"


def test_every_setting_has_help_and_a_converter_accepting_its_default():
    for setting in SETTINGS:
        assert setting.help, setting.name
        if setting.default is not None:
            assert setting.convert(setting.default) == setting.default, setting.name


# -- the command line, end to end --------------------------------------------------------------


def test_bad_flag_value_names_the_flag():
    result = run_arbiter(["asgi_app:app", "-w", "zero"])
    assert result.returncode == 2
    assert "Error: option --workers: 'workers' must be an integer, got 'zero'" in result.stderr


def test_unknown_flag_is_a_usage_error():
    result = run_arbiter(["asgi_app:app", "--wrokers", "2"])
    assert result.returncode == 2
    assert "No such option '--wrokers'" in result.stderr


def test_bad_config_key_from_the_command_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("wsgi_app = 'asgi_app:app'\nmax_request = 5\n")
    result = run_arbiter(["-c", str(path)])
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: {path}:2: unknown setting 'max_request'; did you mean 'max_requests'?"


def test_malformed_bind_address():
    result = run_arbiter(["asgi_app:app", "-b", "127.0.0.1:http"])
    assert result.returncode == 2
    assert "bind '127.0.0.1:http': the port must be a number from 0 to 65535" in result.stderr


def test_no_app_given():
    result = run_arbiter([])
    assert result.returncode == 2
    assert "nothing to run" in result.stderr


def test_print_config_and_check_config(tmp_path):
    result = run_arbiter(["asgi_app:app", "-w", "3", "--print-config"])
    assert result.returncode == 0
    assert "workers                    = 3" in result.stdout
    assert run_arbiter(["asgi_app:app", "--check-config"]).returncode == 0
    broken = run_arbiter(["broken_app:app", "--check-config"])
    assert broken.returncode == 4
    assert "RuntimeError: boom" in broken.stderr


def test_version():
    result = run_arbiter(["--version"])
    assert result.returncode == 0 and result.stdout.startswith("arbiter, version ")


def test_settings_doc_is_generated_from_the_table():
    from pathlib import Path

    from arbiter.config import docs

    path = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
    assert path.read_text() == docs.render(), "run: python3 -m arbiter.config.docs > docs/settings.md"


def test_toml_program_table_suggests_programs(tmp_path):
    path = tmp_path / "arbiter.toml"
    path.write_text('workers = 1\n\n[program.ticker]\ncommand = "sleep 5"\n')
    with pytest.raises(ConfigError) as info:
        build(cli={"config": str(path)})
    assert str(info.value) == f"{path}:3: unknown setting 'program'; did you mean 'programs'?"


def test_help_lists_options_by_section_common_first_and_modes_in_octal():
    out = run_arbiter(["--help"]).stdout
    positions = [out.index(flag) for flag in ("-c, --config", "-b, --bind", "-w, --workers", "--timeout",
                                              "--access-logfile", "--certfile", "--control-socket ")]
    assert positions == sorted(positions), out
    assert out.index("Socket options:") < out.index("Worker options:") < out.index("Control options:")
    mode_help = out[out.index("--control-socket-mode"):].split("\n\n")[0]
    assert "[default: 0600]" in " ".join(mode_help.split()) and "384" not in mode_help
