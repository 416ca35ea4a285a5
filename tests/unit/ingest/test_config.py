"""Configuration: defaults, the JSON file, environment overrides, and refusal of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.config import ConfigError, env_overrides, load_settings
from ingest.masking import masked_settings

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "config" / "seed-example.json"


class TestSeedExample:
    def test_loads_unchanged(self) -> None:
        settings = load_settings({"INGEST_CONFIG": str(SEED)})
        assert settings.s3csv.bucket == "intelgraph-data-lake"
        assert settings.s3csv.concurrency == 4
        assert settings.s3csv.deduplication.key_fields == ["id", "timestamp"]
        assert settings.http.port == 3001
        assert settings.http.idempotency.redis_url == "redis://localhost:6379"
        assert settings.http.rate_limit.burst_size == 1500

    def test_seed_text_is_the_issue_text(self) -> None:
        data = json.loads(SEED.read_text())
        assert set(data) == {"s3csv", "http"}
        assert data["http"]["rateLimit"] == {"maxPerSecond": 1000, "burstSize": 1500}

    @pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.json")), ids=lambda p: p.name)
    def test_every_example_config_loads(self, path: Path) -> None:
        load_settings({}, config_file=path)


class TestPrecedence:
    def test_defaults_without_file(self) -> None:
        settings = load_settings({})
        assert settings.redis_url == "redis://localhost:6379/0"
        assert settings.sink_uri == "file://./var/sink"
        assert settings.port == 8000 and settings.flower_port == 5555
        assert settings.effective_broker_url == settings.redis_url

    def test_environment_over_file_over_defaults(self, tmp_path: Path) -> None:
        path = tmp_path / "c.json"
        path.write_text(
            json.dumps(
                {
                    "sinkUri": "file:///from-file",
                    "redisUrl": "redis://file:1/0",
                    "s3csv": {"rangeSize": 1048576, "prefix": "p/"},
                }
            )
        )
        settings = load_settings(
            {
                "INGEST_CONFIG": str(path),
                "INGEST_SINK_URI": "s3://env/x",
                "INGEST_S3CSV__PREFIX": "env/",
                "PORT": "9001",
            }
        )
        assert settings.sink_uri == "s3://env/x"
        assert settings.redis_url == "redis://file:1/0"
        assert settings.s3csv.prefix == "env/"
        assert settings.s3csv.range_size == 1048576
        assert settings.port == 9001

    def test_contract_variables(self) -> None:
        settings = load_settings(
            {
                "INGEST_REDIS_URL": "redis://r:1/2",
                "INGEST_BROKER_URL": "amqp://b//",
                "INGEST_S3_ENDPOINT_URL": "http://s3:9000",
                "INGEST_SCHEMAS_DIR": "/schemas",
                "INGEST_ADMIN_TOKEN": "t",
                "FLOWER_PORT": "5600",
            }
        )
        assert settings.effective_broker_url == "amqp://b//"
        assert settings.s3_endpoint_url == "http://s3:9000"
        assert settings.schemas_dir == "/schemas"
        assert settings.admin_token == "t"
        assert settings.flower_port == 5600

    def test_json_values_in_environment(self) -> None:
        settings = load_settings(
            {
                "INGEST_S3CSV__ALLOWED_BUCKETS": '["a", "b"]',
                "INGEST_HTTP__SOURCES": json.dumps(
                    {"acme": {"signature": {"scheme": "none"}, "purpose": "p"}}
                ),
            }
        )
        assert settings.s3csv.allowed_buckets == ["a", "b"]
        assert settings.http.sources["acme"].signature.scheme == "none"

    def test_harness_variables_are_ignored(self) -> None:
        assert (
            env_overrides({"INGEST_CONFIG": "x", "INGEST_TEST_REDIS_URL": "y", "HOME": "/"}) == {}
        )


class TestRefusal:
    def test_unknown_key_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"s3csv": {"bucket": "b", "bukcet": "typo"}}))
        with pytest.raises(ConfigError, match=r"s3csv\.bukcet: unknown key"):
            load_settings({"INGEST_CONFIG": str(path)})

    def test_wrong_type_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"http": {"bufferSize": "many"}}))
        with pytest.raises(ConfigError, match=r"http\.bufferSize"):
            load_settings({"INGEST_CONFIG": str(path)})

    def test_bad_environment_value_is_named(self) -> None:
        with pytest.raises(ConfigError, match=r"port"):
            load_settings({"PORT": "eighty"})

    def test_unknown_ingest_variable_is_refused(self) -> None:
        with pytest.raises(ConfigError, match=r"sinkUrl: unknown key"):
            load_settings({"INGEST_SINK_URL": "file:///typo"})

    def test_missing_file_and_bad_json(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_settings({"INGEST_CONFIG": str(tmp_path / "missing.json")})
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(ConfigError, match="not valid JSON"):
            load_settings({"INGEST_CONFIG": str(bad)})

    def test_source_signature_scheme_must_be_known(self) -> None:
        with pytest.raises(ConfigError, match=r"http\.sources\.x\.signature\.scheme"):
            load_settings(
                {
                    "INGEST_HTTP__SOURCES": json.dumps(
                        {"x": {"signature": {"scheme": "md5"}, "purpose": "p"}}
                    )
                }
            )


class TestMasking:
    def test_secrets_and_url_passwords_are_masked(self) -> None:
        settings = load_settings(
            {
                "INGEST_ADMIN_TOKEN": "supersecret",
                "INGEST_REDIS_URL": "redis://u:pw@h:1/0",
                "INGEST_HTTP__SOURCES": json.dumps(
                    {
                        "gh": {
                            "signature": {"scheme": "hmac-sha256", "secrets": ["s1", "s2"]},
                            "purpose": "p",
                        }
                    }
                ),
            }
        )
        shown = json.dumps(masked_settings(settings))
        assert "supersecret" not in shown and "pw@" not in shown
        assert '"s1"' not in shown and "redis://u:***@h:1/0" in shown


class TestCommandLine:
    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=False,
        )

    def test_show_prints_masked_effective_config(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "INGEST_CONFIG": str(SEED), "INGEST_ADMIN_TOKEN": "hunter2"}
        result = self.run("config", "show", env=env)
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["s3csv"]["bucket"] == "intelgraph-data-lake"
        assert shown["adminToken"] == "***"

    def test_show_refuses_bad_environment(self) -> None:
        result = self.run("config", "show", env={"PATH": "/usr/bin:/bin", "PORT": "x"})
        assert result.returncode == 2
        assert result.stderr.startswith("ingest: invalid configuration") and "port" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_validate(self, tmp_path: Path) -> None:
        assert self.run("config", "validate", str(SEED)).returncode == 0
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"s3csv": {"concurrency": "four"}}))
        result = self.run("config", "validate", str(bad))
        assert result.returncode == 1 and "s3csv.concurrency" in result.stderr
