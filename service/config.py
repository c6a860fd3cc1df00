"""Service settings: `CLIPER_*` environment variables, or the same names as `python -m service` flags."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.fetch import check_prefix
from service.idempotency import DEFAULT_TTL_S as DEFAULT_IDEMPOTENCY_TTL_S
from service.store.url import check_store_url

DEFAULT_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
Precision = Literal["auto", "fp32", "fp16", "int8"]  # which bundle graphs are served (service.encoders)


class Settings(BaseSettings):
    """Everything the service can be told; defaults suit a single local instance."""

    model_config = SettingsConfigDict(
        env_prefix="CLIPER_", extra="forbid", cli_kebab_case=True, cli_prog_name="python -m service"
    )

    bundle: Path = Field(description="model bundle folder (written by `python -m offline export`)")
    verify_bundle: bool = Field(True, description="check every bundle file's sha256 at start-up")
    data_dir: Path | None = Field(
        None, description="where ingested items and interactions are kept (default: BUNDLE/../service-data)"
    )
    store_url: SecretStr | None = Field(
        None, description="PostgreSQL shared by replicas on several hosts (postgresql://user:password@host:5432/db); "
        "unset = SQLite in the data dir (one host)"
    )
    snapshot_dir: Path | None = Field(
        None, description="where this host keeps snapshots of its index and users, so a start-up applies only the "
        "store's log entries after the newest (default: DATA_DIR/snapshots)"
    )
    snapshot_keep: int = Field(
        2, ge=0, description="snapshots kept (an older one is loaded when the newest is corrupt); 0 = none written or "
        "loaded: start-up replays the whole logs"
    )
    snapshot_every_changes: int = Field(
        10_000, ge=1, description="write a snapshot once this many log entries (item changes and interactions) were "
        "applied since the newest"
    )
    snapshot_every_s: float = Field(
        300.0, gt=0, description="or once the newest is this old and anything was applied since (and at a clean "
        "shutdown)"
    )
    redis_url: str | None = Field(None, description="Redis for the user-vector cache; unset = in-process LRU")
    redis_timeout_s: float = Field(0.25, gt=0, description="Redis socket timeout")
    redis_retry_s: float = Field(1.0, ge=0, description="after a Redis error, skip Redis this long, then retry")
    cache_ttl_s: int = Field(3600, ge=1, description="lifetime of a cached user vector")
    cache_max_entries: int = Field(100_000, ge=1, description="size of the in-process LRU cache")
    api_key: SecretStr | None = Field(None, description="required in X-API-Key by write endpoints when set")
    idempotency_ttl_s: float = Field(
        DEFAULT_IDEMPOTENCY_TTL_S, gt=0,
        description="how long a write's Idempotency-Key is kept (a retry with it replays the first reply)",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        DEFAULT_PROVIDERS, description="ONNX Runtime providers in order of preference (comma-separated)"
    )
    precision: Precision = Field(
        "auto", description="which bundle graphs to serve: fp16 (only on the CUDA provider; export --fp16), int8 "
        "image and text encoders (for CPU; export --int8), fp32; auto = fp16 on CUDA, int8 on CPU, where the bundle "
        "has them, else fp32"
    )
    intra_op_threads: int = Field(
        0, ge=0,
        description="ONNX Runtime threads per session (0 = auto: CPUs allowed by affinity and cgroup quota // workers)",
    )
    search_threads: int = Field(1, ge=1, description="OpenMP threads of one FAISS search (micro-batch)")
    max_batch_size: int = Field(16, ge=1, description="most items encoded in one micro-batch")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="how long a micro-batch waits to fill up")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="largest request body accepted (413 beyond)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest width x height decoded")
    max_image_aspect_ratio: float = Field(
        20.0, ge=1, description="largest long side / short side of an image (422 beyond; bounds the resize's memory)"
    )
    max_text_chars: int = Field(20_000, ge=1, description="longest text field accepted")
    image_url_allow_list: Annotated[list[str], NoDecode] = Field(
        [], description="URL prefixes image_url may point to (comma-separated; scheme, host, port and whole path "
        "segments must match); empty = no URL fetching"
    )
    image_url_timeout_s: float = Field(5.0, gt=0, description="timeout for fetching an image_url")
    workers: int = Field(
        1, ge=1, description="worker processes (uvicorn); they share the data dir and stay in step through it"
    )
    timeout_header_s: float = Field(
        10.0, gt=0, description="a connection must send a request's headers within this time of connecting or of the "
        "request's first byte (408 and closed otherwise)"
    )
    timeout_keep_alive_s: float = Field(5.0, gt=0, description="a connection idle this long between requests is closed")
    max_header_bytes: int = Field(65536, ge=1024, description="largest request headers accepted (431 beyond)")
    max_concurrency: int = Field(
        512, ge=1, description="open connections or requests in flight per worker beyond which a request gets 503"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("providers", "image_url_allow_list", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("image_url_allow_list")
    @classmethod
    def _check_url_prefixes(cls, entries: list[str]) -> list[str]:
        return [check_prefix(entry) for entry in entries]

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            check_store_url(url.get_secret_value())
        return url

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.bundle.absolute().parent / "service-data"

    @property
    def resolved_snapshot_dir(self) -> Path:
        return self.snapshot_dir if self.snapshot_dir is not None else self.resolved_data_dir / "snapshots"
