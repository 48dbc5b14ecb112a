"""Settings: env prefix and nesting, the YAML file layer, and errors that name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from stablenew import ConfigError, load_settings


def test_env_overrides_file_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "settings.yaml"
    f.write_text("home: /from-file\nwebui:\n  url: http://file:1\n  read_timeout: 30\n")
    monkeypatch.setenv("STABLENEW_SETTINGS_FILE", str(f))
    monkeypatch.setenv("STABLENEW_WEBUI__URL", "http://env:2")
    s = load_settings()
    assert s.webui.url == "http://env:2"
    assert s.webui.read_timeout == 30
    assert s.home == Path("/from-file")
    assert s.resolved_output_root == Path("/from-file/outputs")


def test_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLENEW_WEBUI__PASSWORD", "hunter2")
    s = load_settings()
    assert s.webui.password is not None
    assert s.webui.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in s.model_dump_json()


def test_bad_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("home: [unclosed\n")
    monkeypatch.setenv("STABLENEW_SETTINGS_FILE", str(f))
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_settings()


def test_missing_explicit_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLENEW_SETTINGS_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings()


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLENEW_WEBUI__READ_TIMEOUT", "-1")
    with pytest.raises(ConfigError, match=r"webui\.read_timeout"):
        load_settings()


def test_data_dir_is_the_users_not_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    homes = set()
    for cwd in (tmp_path, tmp_path / "elsewhere"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        homes.add(load_settings().home)
    assert homes == {data / "stablenew"}


def test_relative_home_is_anchored_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STABLENEW_HOME", "data")
    s = load_settings()
    assert s.home == tmp_path / "data"
    assert s.resolved_history_url == f"sqlite:///{tmp_path / 'data' / 'history.db'}"


def test_settings_file_comes_from_the_users_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "xdg-config"
    (config / "stablenew").mkdir(parents=True)
    (config / "stablenew" / "settings.yaml").write_text("work_pool: from-user-config\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    # A configs/settings.yaml in the working directory is no longer read.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "settings.yaml").write_text("work_pool: from-cwd\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().work_pool == "from-user-config"
