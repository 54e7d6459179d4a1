"""Every setting loads from its ``K2_*`` variable and from k2.toml, bad values fail naming the key, the
configuration reference is current, and every setting is read somewhere in the code."""

from __future__ import annotations

import ast
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from k2.config import Settings, SettingsError, load_settings, settings_reference_markdown

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "k2"
FIELDS = sorted(Settings.model_fields)


def _example(name: str) -> Any:
    extra = Settings.model_fields[name].json_schema_extra
    assert isinstance(extra, dict) and "example" in extra, f"{name}: expected an example in json_schema_extra"
    return extra["example"]


def _base_type(name: str) -> Any:
    """The field's type without ``| None``."""
    annotation = Settings.model_fields[name].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, f"{name}: unexpected union {annotation}"
        return args[0]
    return annotation


def _expected(name: str) -> Any:
    """The parsed value the example must produce (computed here, independently of pydantic)."""
    example, kind = _example(name), _base_type(name)
    if kind is Path:
        return Path(example)
    if kind is float:
        return float(example)
    return example


def _env_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("K2_CONFIG_FILE", str(empty))
    return monkeypatch


def test_every_field_has_a_description_section_and_an_example_unlike_its_default() -> None:
    for name in FIELDS:
        field = Settings.model_fields[name]
        extra = field.json_schema_extra
        assert field.description, name
        assert isinstance(extra, dict) and extra.get("section"), name
        # An example equal to the default would make the loading tests below unable to fail.
        assert _expected(name) != field.default, f"{name}: example equals the default"


@pytest.mark.parametrize("name", FIELDS)
def test_field_loads_from_its_environment_variable(name: str, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(f"K2_{name.upper()}", _env_text(_example(name)))
    assert _plain(getattr(load_settings(), name)) == _expected(name)


def _plain(value: object) -> object:
    """A setting's value with a SecretStr unwrapped (secrets load like any other setting)."""
    from pydantic import SecretStr

    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_every_field_loads_from_k2_toml(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "k2.toml"
    path.write_text("".join(f"{name} = {_toml_value(_example(name))}\n" for name in FIELDS))
    clean_env.setenv("K2_CONFIG_FILE", str(path))
    settings = load_settings()
    for name in FIELDS:
        assert _plain(getattr(settings, name)) == _expected(name), name
    # The environment wins over the file.
    clean_env.setenv("K2_TOPIC_PARTITIONS", "3")
    assert load_settings().topic_partitions == 3


def _bad_values(name: str) -> list[str]:
    """Values that must be refused for this field (empty when any string is acceptable)."""
    kind = _base_type(name)
    if kind is bool:
        return ["maybe"]
    if kind is int:
        return ["twelve", "1.5", "-1"]
    if kind is float:
        return ["soon", "-1"]
    if typing.get_origin(kind) is Literal:
        return ["NOT-A-CHOICE"]
    if name in ("broker_storage", "warehouse"):
        return ["ftp://example/x"]
    if name == "catalog_properties":
        return ["not-json", '{"rest.signing-name": 1}']
    return []


CHECKED_BAD = [(n, v) for n in FIELDS for v in _bad_values(n)]


@pytest.mark.parametrize(("name", "value"), CHECKED_BAD, ids=[f"{n}={v}" for n, v in CHECKED_BAD])
def test_bad_value_fails_naming_the_key(name: str, value: str, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(f"K2_{name.upper()}", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"K2_{name.upper()}" in str(info.value)
    assert value in str(info.value)  # says what was found


def test_bad_value_in_k2_toml_fails_naming_the_key(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "k2.toml"
    path.write_text('api_port = 70000\nlog_level = "LOUD"\n')
    clean_env.setenv("K2_CONFIG_FILE", str(path))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "K2_API_PORT" in str(info.value) and "K2_LOG_LEVEL" in str(info.value)


def test_unknown_key_in_k2_toml_is_refused(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "k2.toml"
    path.write_text("topic_partitionz = 4\n")
    clean_env.setenv("K2_CONFIG_FILE", str(path))
    with pytest.raises(SettingsError, match="K2_TOPIC_PARTITIONZ"):
        load_settings()


def test_cli_fails_at_start_up_naming_the_key(clean_env: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    clean_env.setenv("K2_TOPIC_PARTITIONS", "zero")
    result = subprocess.run(
        [sys.executable, "-m", "k2.cli", "config", "show"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "K2_TOPIC_PARTITIONS" in result.stderr


def test_configuration_reference_is_current() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == settings_reference_markdown(), "docs/configuration.md is stale: run `k2 config docs`"
    for name in FIELDS:
        assert f"`K2_{name.upper()}`" in committed


# -- every setting is honoured -----------------------------------------------------------------------


def _settings_methods() -> dict[str, set[str]]:
    """Derived properties/methods of Settings -> the fields they read (``self.<field>``)."""
    tree = ast.parse((SRC / "config.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    reads: dict[str, set[str]] = {}
    for node in cls.body:
        if (
            isinstance(node, ast.FunctionDef)
            and not node.name.startswith("_")
            and node.name != "settings_customise_sources"
        ):
            reads[node.name] = {
                n.attr
                for n in ast.walk(node)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
            }
    return reads


def unread_settings() -> list[str]:
    """Settings no code outside config.py reads (directly or through a derived property it uses)."""
    text = "\n".join(p.read_text() for p in sorted(SRC.rglob("*.py")) if p != SRC / "config.py")
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    used = {n for n in FIELDS if n in words}
    for method, reads in _settings_methods().items():
        if method in words:
            used |= reads
    return sorted(set(FIELDS) - used)


def test_every_setting_is_read_by_the_code() -> None:
    unread = unread_settings()
    assert not unread, f"settings that no code reads (declared but not honoured): {unread}"


def test_secrets_never_print_yet_reach_the_processes_that_need_them(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from k2.lake.catalog import s3_properties

    secrets = {
        "K2_KAFKA_SASL_PASSWORD": "sasl-hunter2",
        "K2_CATALOG_TOKEN": "token-hunter2",
        "K2_CATALOG_CREDENTIAL": "id:cred-hunter2",
        "K2_S3_SECRET_ACCESS_KEY": "s3-hunter2",
        "K2_CATALOG_URI": "postgresql://k2:url-hunter2@127.0.0.1:1/k2",
    }
    for key, value in secrets.items():
        clean_env.setenv(key, value)
    clean_env.setenv("K2_DATA_DIR", str(tmp_path / "k2"))
    shown = subprocess.run(
        [sys.executable, "-m", "k2.cli", "config", "show"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    settings = load_settings()
    assert "hunter2" not in shown.stdout
    for text in (repr(settings), str(settings.model_dump())):  # the URI is a plain setting there
        assert not [v for k, v in secrets.items() if k != "K2_CATALOG_URI" and v in text]
    assert "K2_CATALOG_URI = postgresql://k2:***@127.0.0.1:1/k2" in shown.stdout
    # ...while the child processes `k2 up` starts, librdkafka and pyiceberg get the real values.
    env = settings.environment()
    assert {k: env[k] for k in secrets} == secrets
    assert settings.kafka_client_config()["sasl.password"] == "sasl-hunter2"
    assert s3_properties(settings)["s3.secret-access-key"] == "s3-hunter2"
