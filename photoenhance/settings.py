"""Every setting of every service, read from environment variables in this one place.

Defaults point at services on localhost, so a developer machine needs no configuration at all. Each
field names its environment variable and says what it means; ``settings_table()`` renders the table
the README carries (a test keeps the two in step).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Settings", "SettingsError", "settings_table"]


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _env(name: str, default: Any, help: str) -> Any:
    """Declare a setting: its environment variable, default and meaning."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in settings")
    return field(default=default, metadata={"env": name, "help": help})


@dataclass(frozen=True)
class Settings:
    """Configuration shared by ingest, processor, notifier and the tools.

    Build one with :meth:`from_env` at start-up and pass it down; no module reads the environment
    on its own.
    """

    # -- object store ------------------------------------------------------------------------
    s3_endpoint: str = _env("S3_ENDPOINT", "http://127.0.0.1:9000", "S3 API endpoint the services use.")
    s3_public_endpoint: str = _env(
        "S3_PUBLIC_ENDPOINT", "", "Endpoint written into presigned URLs for browsers; empty means S3_ENDPOINT."
    )
    s3_region: str = _env("S3_REGION", "us-east-1", "Region used to sign S3 requests.")
    s3_access_key: str = _env("S3_ACCESS_KEY", "PHOTOENHANCEDEV00001", "S3 access key of the services.")
    s3_secret_key: str = _env(
        "S3_SECRET_KEY", "photoenhance-dev-secret-key-000000000001", "S3 secret key of the services."
    )
    s3_input_bucket: str = _env("S3_INPUT_BUCKET", "photoenhance-input", "Bucket clients upload into.")
    s3_output_bucket: str = _env("S3_OUTPUT_BUCKET", "photoenhance-output", "Bucket results are written to.")
    s3_provider: str = _env(
        "S3_PROVIDER", "minio", "Object store flavour for `photoenhance init`: `minio` or `ceph`."
    )
    s3_lifecycle_days: int = _env(
        "S3_LIFECYCLE_DAYS", 7, "Days after which inputs and results expire; 0 keeps them forever."
    )
    s3_cors_origins: tuple[str, ...] = _env(
        "S3_CORS_ORIGINS",
        ("*",),
        "Web origins allowed to upload into the input bucket from a browser (bucket CORS, set by "
        "`photoenhance init`); `*` for any.",
    )

    # -- message broker ----------------------------------------------------------------------
    amqp_url: str = _env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ connection URL.")
    amqp_events_exchange: str = _env(
        "AMQP_EVENTS_EXCHANGE",
        "photoenhance.s3-events",
        "Durable topic exchange the object store publishes bucket notifications to.",
    )
    amqp_events_routing_key: str = _env(
        "AMQP_EVENTS_ROUTING_KEY",
        "photoenhance-uploads",
        "Routing key of the notifications (the RGW topic name; MinIO's ROUTING_KEY).",
    )
    amqp_work_queue: str = _env(
        "AMQP_WORK_QUEUE",
        "photoenhance.work",
        "Durable quorum queue of the announcements, routed by the workers to the level queues `<name>.level.<level>`.",
    )
    amqp_dead_letter_exchange: str = _env(
        "AMQP_DEAD_LETTER_EXCHANGE",
        "photoenhance.dead-letter",
        "Exchange receiving messages past the delivery limit; bound to a queue of the same name.",
    )
    amqp_delivery_limit: int = _env(
        "AMQP_DELIVERY_LIMIT", 5, "Deliveries of one message before it is dead-lettered."
    )
    amqp_progress_exchange: str = _env(
        "AMQP_PROGRESS_EXCHANGE",
        "photoenhance.progress",
        "Topic exchange for progress events; routing key `batch.<batch_id>`.",
    )

    # -- database ----------------------------------------------------------------------------
    database_url: str = _env(
        "DATABASE_URL",
        "sqlite+aiosqlite:///var/photoenhance.db",
        "SQLAlchemy async URL: SQLite (embedded default) or postgresql+asyncpg://...",
    )
    database_busy_timeout_ms: int = _env(
        "DATABASE_BUSY_TIMEOUT_MS", 30_000, "SQLite: how long a writer waits for the lock."
    )

    # -- enhancement engine ------------------------------------------------------------------
    weights_dir: Path = _env("WEIGHTS_DIR", Path("weights"), "Folder holding the model weight files.")
    allow_custom_weights: bool = _env(
        "ALLOW_CUSTOM_WEIGHTS", False, "Accept weight files whose checksums differ from the official ones."
    )
    device: str = _env("DEVICE", "auto", "`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.")
    max_input_pixels: int = _env(
        "MAX_INPUT_PIXELS", 50_000_000, "Largest input accepted, in pixels, checked before decoding."
    )
    max_output_pixels: int = _env(
        "MAX_OUTPUT_PIXELS",
        64_000_000,
        "Largest result, in pixels (input pixels x upscale²), checked from the header before decoding; "
        "larger fails with `output_too_large` naming the largest upscale that fits.",
    )
    engine_path: str = _env(
        "ENGINE_PATH",
        "auto",
        "`device`: every face step as torch operations on the engine's device (the picture copied there once); "
        "`reference`: warps, mask and paste-back in float64 NumPy/OpenCV; `auto`: device on CUDA, reference on the CPU.",
    )
    precision_detector: str = _env(
        "PRECISION_DETECTOR", "auto", "RetinaFace's precision: `auto`, `fp32`, `tf32`, `bf16` or `fp16` (device path)."
    )
    precision_gfpgan: str = _env(
        "PRECISION_GFPGAN", "auto", "GFPGAN's precision (`auto`: TF32 on CUDA, fp32 on the CPU; device path)."
    )
    precision_parsenet: str = _env(
        "PRECISION_PARSENET", "auto", "ParseNet's precision (`auto`: TF32 on CUDA, fp32 on the CPU; device path)."
    )
    precision_background: str = _env(
        "PRECISION_BACKGROUND", "auto", "Real-ESRGAN's precision (`auto`: fp16 on CUDA, fp32 on the CPU; device path)."
    )
    engine_compile: str = _env(
        "ENGINE_COMPILE",
        "off",
        "`off`, `compile` (torch.compile) or `cudagraphs` (torch.compile, mode reduce-overhead): the face "
        "networks compiled at start-up (minutes), the background at each new picture size (a minute each on "
        "an H200, then 1.55x faster): for fleets whose picture sizes repeat (device path).",
    )
    engine_cudnn_benchmark: bool = _env(
        "ENGINE_CUDNN_BENCHMARK",
        False,
        "Let cuDNN time its convolution algorithms for each new input shape and keep the fastest (CUDA). "
        "On an H200 no network here got faster, and each new picture size paused 3 s: off unless measured.",
    )
    engine_step_sync: bool = _env(
        "ENGINE_STEP_SYNC",
        False,
        "Wait for the device at each step's start and end, so the reported step times are the device's "
        "(CUDA runs steps ahead of the host): for benchmarks, at the cost of the overlap.",
    )
    device_memory_budget_mb: int = _env(
        "DEVICE_MEMORY_BUDGET_MB",
        0,
        "GPU memory the engine plans faces per forward and background tiles for; 0 takes 80 % of the card.",
    )

    # -- processor ---------------------------------------------------------------------------
    event_loop: str = _env(
        "EVENT_LOOP",
        "auto",
        "Event loop of the processor, engine process, notifier and webhooks: `auto` (uvloop when installed), "
        "`uvloop` or `asyncio`.",
    )
    prefetch: int = _env("PREFETCH", 4, "Unacknowledged messages one worker holds (its in-flight window).")
    worker_memory_budget_mb: int = _env(
        "WORKER_MEMORY_BUDGET_MB",
        0,
        "Memory the images one worker has in flight may take together (estimated from their headers); "
        "an image waits until its share fits, one that needs more than all of it fails with `over_memory_budget`. "
        "0: 60 % of the host's (or container's) memory. On CUDA, 80 % of the device's memory is budgeted as well.",
    )
    microbatch_max_images: int = _env(
        "MICROBATCH_MAX_IMAGES", 4, "Most images handed to the engine together."
    )
    microbatch_window_ms: int = _env(
        "MICROBATCH_WINDOW_MS",
        50,
        "How long a micro-batch waits for more images before it runs (`fast` images do not wait).",
    )
    lease_seconds: int = _env(
        "LEASE_SECONDS",
        60,
        "How long a claim on an image lasts unless renewed (every third of it) before another worker may take it.",
    )
    reconcile_interval_s: int = _env(
        "RECONCILE_INTERVAL_S", 30, "Seconds between reconciler passes inside the worker; 0 disables."
    )
    batch_idle_seconds: int = _env(
        "BATCH_IDLE_SECONDS",
        60,
        "A batch without an expected count completes this long after its last upload, once all are final.",
    )
    shutdown_grace_s: int = _env(
        "SHUTDOWN_GRACE_S", 30, "On SIGTERM, how long in-flight work may run before it is left for redelivery."
    )
    processor_port: int = _env("PROCESSOR_PORT", 8082, "Port of the processor's /healthz and /metrics.")
    processor_host: str = _env(
        "PROCESSOR_HOST", "127.0.0.1", "Interface of the processor's /healthz and /metrics (0.0.0.0 for all)."
    )
    processor_qualities: tuple[str, ...] = _env(
        "PROCESSOR_QUALITIES",
        ("fast", "balanced", "best"),
        "Quality levels a worker serves; start-up fails naming any missing weight file.",
    )
    worker_beat_s: float = _env(
        "WORKER_BEAT_S", 5.0, "Seconds between a worker's heartbeats (its row in the `workers` table)."
    )
    worker_gone_after_beats: int = _env(
        "WORKER_GONE_AFTER_BEATS", 3, "Missed heartbeats after which a worker counts as gone (its levels no longer served)."
    )
    engine_socket: str = _env(
        "ENGINE_SOCKET",
        "",
        "Unix socket of an engine process (`photoenhance engine`); when set, the worker loads no models and "
        "hands its images to that process, serving its levels. Empty: the worker holds the engine itself.",
    )
    engine_wait_s: float = _env(
        "ENGINE_WAIT_S",
        60.0,
        "How long a worker with ENGINE_SOCKET waits at start-up for the engine process to answer before it "
        "gives up (exit status 3).",
    )
    worker_self_timing: bool = _env(
        "WORKER_SELF_TIMING",
        True,
        "Time each served level on a small sample at start-up, so estimates exist before the first image.",
    )
    fleet_levels: tuple[str, ...] = _env(
        "FLEET_LEVELS",
        (),
        "Levels the deployment serves even while no worker of them runs (scale to zero); with live workers' "
        "levels, what `auto` chooses from.",
    )
    default_quality: str = _env(
        "DEFAULT_QUALITY",
        "auto",
        "Level of a batch that names none (direct uploads without manifest or metadata): `auto` (best served "
        "when the batch is created) or a level.",
    )
    processor_routes: bool = _env(
        "PROCESSOR_ROUTES",
        True,
        "The worker also routes announcements (the shared `AMQP_WORK_QUEUE`) to the level queues; off leaves "
        "that to other workers.",
    )
    processor_io_threads: int = _env(
        "PROCESSOR_IO_THREADS", 8, "Threads for object I/O, decoding and encoding beside inference."
    )
    retry_base_delay_ms: int = _env(
        "RETRY_BASE_DELAY_MS", 1000, "First back-off before a transient failure (store, DB, broker) is retried."
    )
    retry_max_delay_ms: int = _env(
        "RETRY_MAX_DELAY_MS", 60_000, "Longest back-off; each retry doubles the delay up to this."
    )
    retry_max_attempts: int = _env(
        "RETRY_MAX_ATTEMPTS", 8,
        "Unexpected errors of one image before it fails (`retries_exhausted`); outages (store, DB, broker, disk) are waited out.",
    )
    level_wait_max_s: int = _env(
        "LEVEL_WAIT_MAX_S",
        0,
        "How long an image waits for a worker serving its level before it fails (`quality_not_served`); "
        "0: PRESIGN_EXPIRY_S plus a day.",
    )
    retry_min_interval_s: float = _env(
        "RETRY_MIN_INTERVAL_S",
        10.0,
        "Seconds between two accepted `POST /api/v1/batches/{id}/retry` of one batch; sooner gets 429.",
    )
    reconcile_grace_s: int = _env(
        "RECONCILE_GRACE_S", 60, "The reconciler leaves objects younger than this to their notification."
    )

    # -- ingest API --------------------------------------------------------------------------
    ingest_host: str = _env("INGEST_HOST", "127.0.0.1", "Interface the ingest API listens on.")
    ingest_port: int = _env("INGEST_PORT", 8080, "Port of the ingest API and the web page.")
    api_keys: tuple[str, ...] = _env(
        "API_KEYS", (), "Comma-separated API keys for server-to-server clients (read any batch)."
    )
    ingest_require_api_key: bool = _env(
        "INGEST_REQUIRE_API_KEY", False, "Creating a batch needs an API key (closes the public web page)."
    )
    ingest_allow_put_uploads: bool = _env(
        "INGEST_ALLOW_PUT_UPLOADS",
        False,
        "Hand out presigned PUTs when a client asks (`\"upload\": \"put\"`). Off: the store binds no header of a PUT "
        "(size, ACL, x-amz-copy-source); turn on only when the S3 key presigns with may write the input bucket and nothing else.",
    )
    max_files_per_batch: int = _env("MAX_FILES_PER_BATCH", 1000, "Most files one batch may declare.")
    max_file_bytes: int = _env("MAX_FILE_BYTES", 50 * 1024 * 1024, "Largest upload accepted, in bytes.")
    presign_expiry_s: int = _env(
        "PRESIGN_EXPIRY_S", 900, "Lifetime of presigned upload and result URLs (result links are reused for a tenth of it)."
    )

    # -- quotas and rate limits (shared by every ingest replica, counted in the database) -------
    trusted_proxies: tuple[str, ...] = _env(
        "TRUSTED_PROXIES",
        (),
        "Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` names the client (read right to left); "
        "from any other peer the header is ignored.",
    )
    quota_public_batches_per_hour: int = _env(
        "QUOTA_PUBLIC_BATCHES_PER_HOUR", 20, "Batches one client address (no API key) may create per hour; 0: no limit."
    )
    quota_public_files_per_day: int = _env(
        "QUOTA_PUBLIC_FILES_PER_DAY", 2000, "Files one client address may declare per day (UTC); 0: no limit."
    )
    quota_public_bytes_per_day: int = _env(
        "QUOTA_PUBLIC_BYTES_PER_DAY", 5 * 1024**3, "Bytes one client address may declare per day (UTC); 0: no limit."
    )
    quota_public_open_batches: int = _env(
        "QUOTA_PUBLIC_OPEN_BATCHES", 3, "Batches of one client address open at once; 0: no limit."
    )
    quota_key_batches_per_hour: int = _env(
        "QUOTA_KEY_BATCHES_PER_HOUR", 600, "Batches one API key may create per hour; 0: no limit."
    )
    quota_key_files_per_day: int = _env(
        "QUOTA_KEY_FILES_PER_DAY", 200_000, "Files one API key may declare per day (UTC); 0: no limit."
    )
    quota_key_bytes_per_day: int = _env(
        "QUOTA_KEY_BYTES_PER_DAY", 1024**4, "Bytes one API key may declare per day (UTC); 0: no limit."
    )
    quota_key_open_batches: int = _env(
        "QUOTA_KEY_OPEN_BATCHES", 100, "Batches of one API key open at once; 0: no limit."
    )

    # -- webhooks (``photoenhance webhooks``) --------------------------------------------------
    webhook_secrets_key: str = _env(
        "WEBHOOK_SECRETS_KEY",
        "",
        "Key that seals webhook signing secrets in the database (AES-GCM); empty: webhooks are off. Keep it out of the database.",
    )
    api_key_webhooks: tuple[str, ...] = _env(
        "API_KEY_WEBHOOKS",
        (),
        "Default webhook of an API key's batches, comma-separated `KEY=URL` (all event types; signed with a secret per key, "
        "returned at each creation). A batch that names its own webhook uses that instead.",
    )
    webhook_direct_secret: str = _env(
        "WEBHOOK_DIRECT_SECRET",
        "",
        "Signing secret (`whsec_` + base64 of 24 to 64 bytes) of direct batches whose `_batch.json` names a webhook "
        "without its own `secret`; empty: such a webhook is refused.",
    )
    webhook_allow_http: bool = _env(
        "WEBHOOK_ALLOW_HTTP", False, "Accept http:// webhook URLs (development only; https otherwise)."
    )
    webhook_allow_private: tuple[str, ...] = _env(
        "WEBHOOK_ALLOW_PRIVATE",
        (),
        "Addresses or CIDR blocks webhooks may reach although not public (loopback, private, link-local are refused otherwise).",
    )
    webhook_timeout_s: float = _env(
        "WEBHOOK_TIMEOUT_S", 10.0, "How long one delivery may take, connect to last byte, before it counts as failed."
    )
    webhook_max_per_host: int = _env(
        "WEBHOOK_MAX_PER_HOST", 4, "Deliveries in flight to one receiver host per sender process; more wait in a delay queue."
    )
    webhook_prefetch: int = _env(
        "WEBHOOK_PREFETCH", 64, "Events one sender process holds unacknowledged (deliveries in flight overall)."
    )
    webhook_retry_base_s: float = _env(
        "WEBHOOK_RETRY_BASE_S", 5.0, "First back-off after a failed delivery; each retry doubles it."
    )
    webhook_retry_max_delay_s: float = _env(
        "WEBHOOK_RETRY_MAX_DELAY_S", 3600.0, "Longest single back-off between two attempts of one delivery."
    )
    webhook_retry_max_s: int = _env(
        "WEBHOOK_RETRY_MAX_S", 86_400, "How long a delivery is retried (from its first attempt) before it is dead."
    )
    webhooks_host: str = _env("WEBHOOKS_HOST", "127.0.0.1", "Interface of the webhook sender's /healthz and /metrics.")
    webhooks_port: int = _env("WEBHOOKS_PORT", 8083, "Port of the webhook sender's /healthz and /metrics.")

    # -- notifier ----------------------------------------------------------------------------
    notifier_host: str = _env("NOTIFIER_HOST", "127.0.0.1", "Interface the notifier listens on.")
    notifier_port: int = _env("NOTIFIER_PORT", 8081, "Port of the WebSocket / SSE notifier.")
    notifier_public_url: str = _env(
        "NOTIFIER_PUBLIC_URL", "", "Base URL clients use to reach the notifier; empty means host:port."
    )
    notifier_metrics_host: str = _env(
        "NOTIFIER_METRICS_HOST", "127.0.0.1", "Interface of the notifier's /metrics (kept off the public port)."
    )
    notifier_metrics_port: int = _env(
        "NOTIFIER_METRICS_PORT", 8083, "Port of the notifier's /metrics; never the public WebSocket/SSE port."
    )
    ws_heartbeat_s: float = _env("WS_HEARTBEAT_S", 20.0, "Seconds between WebSocket pings.")
    ws_send_queue_max: int = _env(
        "WS_SEND_QUEUE_MAX", 1000, "Events buffered per client before a slow client is disconnected."
    )

    # -----------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ`` (default: ``os.environ``); ``overrides`` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name in environ:
                values[f.name] = _parse(name, environ[name], f.default)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests and tools use this)."""
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables (for starting another process with them)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = str(value)
            env[f.metadata["env"]] = text
        return env

    @property
    def worker_gone_after_s(self) -> float:
        """How old a worker's last heartbeat may be before it counts as gone."""
        return self.worker_beat_s * self.worker_gone_after_beats

    @property
    def s3_secure(self) -> bool:
        """Whether the S3 endpoint uses TLS."""
        return urlsplit(self.s3_endpoint).scheme == "https"

    @property
    def s3_host(self) -> str:
        """``host:port`` of the S3 endpoint, as the minio client wants it."""
        return urlsplit(self.s3_endpoint).netloc

    @property
    def presign_endpoint(self) -> str:
        """Endpoint written into presigned URLs."""
        return self.s3_public_endpoint or self.s3_endpoint


def _parse(name: str, raw: str, default: Any) -> Any:
    """Convert one environment value to the type of its default, or say which variable is wrong."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("expected true/false")
        if isinstance(default, int):
            return int(raw.replace("_", ""))
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw).expanduser()
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: {exc}") from exc


def settings_table() -> str:
    """The README's table of environment variables, as Markdown."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        shown = f"`{shown}`" if shown else "(empty)"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)
