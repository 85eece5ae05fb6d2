"""`ServeConfig`: every setting of `reasoning-dspy serve`, one pydantic model for the Python API, the CLI
flags (each field's description is its `--help` text) and the `/health` report."""

from __future__ import annotations

import ipaddress
import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Environment variable holding the API key when `--api-key` is not given.
API_KEY_ENV = "REASONING_DSPY_API_KEY"


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


class ServeConfig(BaseModel):
    """How to serve one steered model over the OpenAI API."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("tiny-random", description="model to serve: tiny-random, smollm2-reasoner, an HF id or folder")
    sae: str | None = Field(None, description="SAE: tiny-planted, a shipped SAE name, or a folder "
                                              "(default: the model's shipped SAE, if it has one)")
    scores: str | None = Field(None, description="ReasonScore folder (default: scores/ inside the SAE folder)")
    served_name: str | None = Field(None, description="model id clients send (default: the --model value)")
    dtype: str | None = Field(None, description="dtype to run the model in (default: the checkpoint's)")
    device: str = Field("cpu", description="torch device")
    seed: int = Field(0, description="seed of offline random models")
    host: str = Field("127.0.0.1", description="address to bind (loopback by default)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    api_key: str | None = Field(None, description=f"require this bearer key on /v1/* (default: ${API_KEY_ENV})")
    max_queue: int = Field(256, ge=1, description="generation rows admitted at once (queued + running); "
                                                  "more get 503 with Retry-After")
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with a 503")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (413 beyond)")
    max_prompt_tokens: int | None = Field(None, ge=1, description="longest prompt in tokens (default: the "
                                                                  "model's context minus one)")
    max_tokens_limit: int = Field(512, ge=1, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(128, ge=1, description="max_tokens when a request gives none")
    max_n: int = Field(8, ge=1, description="largest n (choices per request)")
    max_batch_size: int = Field(32, ge=1, description="rows per batched generate")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the engine gathers concurrent requests")
    reasoning_features: int = Field(10, ge=1, description="top ReasonScore features whose activation "
                                                          "`/v1/explain` and responses report")
    completion_store: int = Field(1024, ge=0, description="recent completions kept for /v1/explain by id")
    log_level: str = Field("info", description="log level of the JSON logs")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host must not be empty (127.0.0.1 keeps the server on this machine)")
        return value

    def resolved_api_key(self) -> str | None:
        """The key clients must send: `api_key`, else the environment variable, else none."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    @property
    def name(self) -> str:
        return self.served_name or self.model

    def exposure_warning(self) -> str | None:
        """What to warn about when the server is reachable beyond this machine without a key."""
        if is_loopback(self.host) or self.resolved_api_key() is not None:
            return None
        return (f"serving on {self.host} without an API key: anyone who can reach this machine's port {self.port} "
                f"can generate with and explain the model; set --api-key (or ${API_KEY_ENV}), or bind 127.0.0.1")

    def public(self) -> dict:
        """The settings without the API key (for /health and the start-up log)."""
        data = self.model_dump(exclude={"api_key"})
        data["api_key_required"] = self.resolved_api_key() is not None
        return data
