"""The one typed settings model: defaults, then the JSON file named by INGEST_CONFIG, then env.

Every process builds a :class:`Settings` once at start with :func:`load_settings` and passes it
down; no other module reads ``os.environ``. Keys are camelCase in JSON (the seed's format).
This module is the model; reading the file and the environment is ``ingest.config.sources``.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ingest.config.sources import (
    PLAIN_ENV,
    ConfigError,
    build_settings,
    env_overrides,
    load_settings,
    read_config_file,
)

__all__ = [
    "PLAIN_ENV",
    "ConfigError",
    "DedupConfig",
    "HttpConfig",
    "RateLimitConfig",
    "S3CsvConfig",
    "Settings",
    "SignatureSettings",
    "SourceConfig",
    "WatchConfig",
    "build_settings",
    "env_overrides",
    "load_settings",
    "read_config_file",
]


class Section(BaseModel):
    """A config section: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True
    )


class DedupConfig(Section):
    enabled: bool = Field(True, description="Drop records whose identity was already stored.")
    key_fields: list[str] = Field(
        default_factory=list,
        description="Columns that identify a record; empty means the row's contentHash.",
    )
    ttl: int = Field(
        30 * 86400, ge=60, description="Seconds a dedup mark lives: dedup spans re-runs within it."
    )


class RateLimitConfig(Section):
    max_per_second: float = Field(1000, gt=0, description="Token refill rate, events per second.")
    burst_size: int = Field(1500, ge=1, description="Bucket capacity: the largest burst allowed.")


class WatchConfig(Section):
    """A watched S3 prefix: objects created under it are imported from its SQS notifications."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name of the watch (letters, digits, `_.-`); shown in imports and metrics.",
    )
    queue_url: str = Field(
        ...,
        pattern=r"^https?://\S+$",
        description="URL of the SQS queue that receives the bucket's event notifications.",
    )
    bucket: str = Field(..., min_length=3, max_length=63, description="Bucket the watch accepts.")
    prefix: str = Field("", description="Key prefix the watch accepts; others are refused.")
    schema_name: str = Field(
        ..., alias="schema", min_length=1, description="CSV schema of the objects."
    )
    purpose: str = Field(..., min_length=1, description="Why the data is ingested (provenance).")
    classification: str | None = Field(None, description="Classification (provenance).")
    mapping: dict[str, str] = Field(
        default_factory=dict, description="CSV header -> column name, applied before validation."
    )
    ingested_by: str | None = Field(
        None, description="`ingestedBy` recorded in provenance; default `watch:<name>`."
    )

    @property
    def actor(self) -> str:
        return self.ingested_by or f"watch:{self.name}"


class S3CsvConfig(Section):
    bucket: str | None = Field(
        None, description="Default bucket for imports given as a bare prefix."
    )
    region: str = Field("us-east-1", description="AWS region of the buckets.")
    prefix: str = Field("", description="Default key prefix.")
    batch_size: int = Field(
        1000, ge=1, le=1_000_000, description="Rows per record batch inside an output file."
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Worker processes the `worker` entry starts (Celery -c); unset: CPU cores.",
    )
    range_size: int = Field(
        32 * 1024 * 1024, ge=64 * 1024, description="Bytes per range task when a CSV is split."
    )
    fanout_chunk: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Range tasks per chord; larger prefixes fan out in chunks.",
    )
    deduplication: DedupConfig = Field(default_factory=DedupConfig)
    allowed_buckets: list[str] = Field(
        default_factory=list, description="When not empty, imports may only read these buckets."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter.")
    quote_char: str = Field('"', min_length=1, max_length=1, description="CSV quote character.")
    encoding: str = Field("utf-8", description="Encoding of the CSV bytes.")
    header: bool = Field(True, description="The first line of every object is a header row.")
    max_retries: int = Field(
        5, ge=0, le=100, description="Celery retries of a failing range before the DLQ."
    )
    retry_backoff_max: int = Field(120, ge=1, description="Cap, in seconds, of the retry backoff.")
    breaker_threshold: int = Field(
        5, ge=1, description="Consecutive S3 failures that open the circuit breaker."
    )
    breaker_reset_seconds: float = Field(
        10.0, gt=0, description="Seconds the breaker stays open before a trial request."
    )
    retain_freed_memory: bool = Field(
        True,
        description="Worker processes keep freed memory for the next range (no page faults "
        "on its buffers; the process keeps its peak heap).",
    )
    watches: list[WatchConfig] = Field(
        default_factory=list,
        description="Watched prefixes imported from S3 event notifications (see below).",
    )
    poll_watches: bool = Field(
        True, description="Whether the `worker` entry polls the watches' SQS queues."
    )
    watch_wait_seconds: int = Field(
        20, ge=1, le=20, description="SQS long-poll wait of one receive, in seconds."
    )

    @field_validator("watches")
    @classmethod
    def _watches_consistent(cls, watches: list[WatchConfig], info: Any) -> list[WatchConfig]:
        allowed = info.data.get("allowed_buckets") or []
        names: set[str] = set()
        queues: set[str] = set()
        for i, watch in enumerate(watches):
            if watch.name in names:
                raise ValueError(f"{i}.name: another watch is named {watch.name!r}")
            if watch.queue_url in queues:
                raise ValueError(f"{i}.queueUrl: another watch polls {watch.queue_url}")
            if allowed and watch.bucket not in allowed:
                raise ValueError(f"{i}.bucket: {watch.bucket!r} is not in s3csv.allowedBuckets")
            names.add(watch.name)
            queues.add(watch.queue_url)
        return watches

    lease_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description=(
            "Lease of a range or scan task, renewed while it runs: one without a result this"
            " long after its worker stopped renewing it (killed, message lost) is sent again."
        ),
    )
    stall_timeout: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description=(
            "An import with no progress for this long ends `failed`, its unfinished ranges in"
            " the DLQ (`ingest dlq retry` finishes them): no import stays `running`."
        ),
    )


class SignatureSettings(Section):
    scheme: (
        Literal["standard-webhooks", "hmac-sha256", "stripe", "slack", "twilio", "none"] | None
    ) = Field(
        None, description="How requests are signed; unset: the scheme of the source's provider."
    )
    secrets: list[str] = Field(default_factory=list, description="Several secrets for rotation.")
    # Unset (None) means "the provider's, else the scheme's default", so that a config written
    # back from `ingest config show` keeps meaning the same.
    header: str | None = Field(
        None,
        description="hmac-sha256: the signature header; unset: the provider's, else "
        "X-Hub-Signature-256.",
    )
    prefix: str | None = Field(
        None,
        description="hmac-sha256: prefix before the digest; unset: the provider's, else sha256=.",
    )
    tolerance_seconds: int | None = Field(
        None,
        ge=1,
        description="Seconds a signed timestamp may be off (standard-webhooks, stripe, slack); "
        "unset: the provider's, else 300.",
    )
    encoding: Literal["hex", "base64"] | None = Field(
        None, description="hmac-sha256: how the digest is written; unset: the provider's, else hex."
    )

    @field_validator("secrets")
    @classmethod
    def _secrets_needed(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("secrets must not be empty strings")
        return value


class SourceConfig(Section):
    signature: SignatureSettings
    purpose: str = Field(..., min_length=1, description="Why records of this source are kept.")
    classification: str | None = None
    rate_limit: RateLimitConfig | None = Field(
        None, description="Per-source token bucket; defaults to http.rateLimit."
    )
    id_field: str | None = Field(None, description="Event field that serves as idempotency key.")
    observed_at_field: str | None = Field(
        None, description="Event field holding when the event was observed (ISO 8601)."
    )
    event_schema: str | None = Field(
        None, description="Name of a JSON Schema file in the schemas dir events must satisfy."
    )
    provider: (
        Literal["stripe", "github", "shopify", "slack", "twilio", "standard-webhooks"] | None
    ) = Field(
        None,
        description="Preset of signature scheme, idempotency key and observedAt as the provider "
        "signs them; settings given explicitly win (see docs/webhooks.md).",
    )
    public_url: str | None = Field(
        None,
        description="twilio: the public base URL (scheme and host) the provider posts to; "
        "X-Forwarded-* headers are never trusted instead.",
    )
    id_header: str | None = Field(
        None, description="Request header whose value is the idempotency key, before any other."
    )
    observed_at_header: str | None = Field(
        None, description="Request header holding when the event was observed (epoch or ISO 8601)."
    )

    @model_validator(mode="after")
    def _scheme_or_provider(self) -> SourceConfig:
        if self.signature.scheme is None and self.provider is None:
            raise ValueError("signature.scheme is required unless the source names a provider")
        if (self.signature.scheme or self.provider) == "twilio" and not self.public_url:
            raise ValueError("publicUrl is required for twilio: the URL Twilio signs")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                raise ValueError(
                    "publicUrl must be an http(s) URL without a query, like https://host"
                )
        return self


class IdempotencyConfig(Section):
    enabled: bool = True
    ttl: int = Field(86400, ge=1, description="Seconds an idempotency key is remembered.")
    redis_url: str | None = Field(None, description="Redis for keys; defaults to redisUrl.")


class BackpressureConfig(Section):
    high_water_mark: int = Field(
        200_000,
        ge=1,
        description="Accepted events of one source waiting to be stored (its stream) before "
        "new ones are answered 503.",
    )
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After sent with a 503.")


class HttpConfig(Section):
    port: int = Field(
        3001, ge=1, le=65535, description="Seed key; the web process binds $PORT (see `port`)."
    )
    buffer_size: int = Field(
        200, ge=1, le=10_000, description="Most events a drain stores as one batch (one sink file)."
    )
    batch_interval: int = Field(
        10,
        ge=0,
        description="Seed key, kept for its configs: no request waits for a batch any more (an "
        "event is durable when answered, and drains store whatever has arrived).",
    )
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)
    rate_limit: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="Default per-source token bucket."
    )
    global_rate_limit: RateLimitConfig = Field(
        default_factory=lambda: RateLimitConfig(max_per_second=20000, burst_size=40000),
        description="One token bucket shared by every source.",
    )
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest body, decompressed.")
    max_batch_events: int = Field(1000, ge=1, description="Largest batch request, in events.")
    max_json_depth: int = Field(32, ge=2, description="Deepest JSON nesting accepted.")
    body_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a webhook request's body may take to arrive; a slower one is "
        "answered 408 and its connection closed, so stalled clients cannot hold the server.",
    )
    backpressure: BackpressureConfig = Field(default_factory=BackpressureConfig)
    redeliver_after: int = Field(
        60,
        ge=1,
        description="Seconds after which an accepted event read by a drain and not stored (the "
        "drain died, or storing failed) is read again by another drain.",
    )
    admin_rate_limit: str = Field("60/minute", description="flask-limiter limit per client IP.")


class CeleryConfig(Section):
    visibility_timeout: int = Field(
        300, ge=30, description="Seconds before Redis redelivers an unacknowledged task."
    )
    prefetch_multiplier: int = Field(1, ge=1, description="Tasks reserved per worker process.")
    max_retries: int = Field(8, ge=0, description="Retries of webhook batch and sink writes.")
    result_expires: int = Field(86400, ge=60, description="Seconds task results are kept.")
    consumer_stall_timeout: int = Field(
        60,
        ge=0,
        description="A worker idle this many seconds while messages wait in its queues exits, "
        "for its supervisor to restart it (a consumer that stopped after a broker restart); "
        "0 turns the check off.",
    )


class DlqConfig(Section):
    max_entries: int = Field(1_000_000, ge=1, description="Bound: more entries are refused.")
    warn_threshold: int = Field(1000, ge=1, description="Depth past which a warning fires.")


class ObservabilityConfig(Section):
    log_level: str = Field("INFO", description="Log level of every process.")
    log_json: bool = Field(True, description="Structured JSON logs (false: console format).")
    sentry_dsn: str | None = Field(None, description="Sentry DSN; error reporting is off unset.")
    metrics_dir: str | None = Field(
        None, description="prometheus-client multiprocess directory for worker metrics."
    )
    worker_metrics_port: int = Field(
        9808, ge=0, le=65535, description="Port of the worker's /metrics; 0 turns it off."
    )
    webhook_access_log_sample: int = Field(
        100,
        ge=1,
        description="One in this many successful webhook answers gets an access log line "
        "(1: every one); errors and other routes are always logged.",
    )


class Settings(BaseSettings):
    """Effective configuration of every IntelGraph ingest process."""

    model_config = SettingsConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True
    )

    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis for broker, idempotency, rate limits, DLQ, job state.",
    )
    broker_url: str | None = Field(None, description="Celery broker when not that Redis.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint; unset is AWS.")
    sqs_endpoint_url: str | None = Field(
        None, description="SQS-compatible endpoint of the watches; unset: s3EndpointUrl, then AWS."
    )
    sink_uri: str = Field("file://./var/sink", description="Where stored records go.")
    schemas_dir: str | None = Field(None, description="Extra directory of CSV schema files.")
    admin_token: str | None = Field(None, description="Bearer token of every /admin endpoint.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the web process.")
    flower_port: int = Field(5555, ge=1, le=65535, description="Port of Flower.")
    web_workers: int | None = Field(
        None, ge=1, le=256, description="gunicorn worker processes of `web`; unset: 2 per core."
    )
    s3csv: S3CsvConfig = Field(default_factory=S3CsvConfig, alias="s3csv")
    http: HttpConfig = Field(default_factory=HttpConfig)
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    dlq: DlqConfig = Field(default_factory=DlqConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def effective_sqs_endpoint_url(self) -> str | None:
        return self.sqs_endpoint_url or self.s3_endpoint_url

    @property
    def idempotency_redis_url(self) -> str:
        return self.http.idempotency.redis_url or self.redis_url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit arguments: load_settings() (ingest/config/sources.py) merges file and
        # environment itself, so the
        # precedence is in one place and errors can say where a bad value came from.
        return (init_settings,)
