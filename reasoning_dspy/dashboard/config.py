"""`DashboardConfig`: every setting of `reasoning-dspy dashboard`, one pydantic model for the Python
API and the CLI flags (each field's description is its `--help` text)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


def default_cache_dir() -> Path:
    """`<reasoning-dspy cache>/dashboard`: corpus activations and map layouts, reused across starts."""
    from reasoning_dspy.gguf_models import cache_root

    return cache_root() / "dashboard"


class DashboardConfig(BaseModel):
    """What the dashboard shows and where it listens."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-reasoner", description="model: smollm2-reasoner, tiny-random, an HF id or folder")
    sae: str | None = Field(None, description="SAE: a shipped SAE name, tiny-planted, or a folder (default: the "
                                              "model's shipped SAE)")
    scores: str | None = Field(None, description="ReasonScore folder (default: scores/ inside the SAE folder)")
    dtype: str | None = Field(None, description="dtype to run the model in (default: the checkpoint's)")
    device: str = Field("cpu", description="torch device")
    seed: int = Field(0, description="seed of offline random models")
    host: str = Field("127.0.0.1", description="address to bind (loopback by default)")
    port: int = Field(7860, ge=0, le=65535, description="TCP port (0 picks a free one)")
    server: str | None = Field(None, description="URL of a running `reasoning-dspy serve` (e.g. http://127.0.0.1:8000) "
                                                 "to generate and explain through; default: an in-process engine")
    api_key: str | None = Field(None, description="API key of that server (default: $REASONING_DSPY_API_KEY)")
    database_url: str | None = Field(None, description="tracking database for the Experiments page (default: "
                                                       "$DATABASE_URL, else SQLite at runs/tracking.sqlite)")
    cache_dir: Path | None = Field(None, description="where corpus activations and map layouts are cached "
                                                     "(default: ~/.cache/reasoning-dspy/dashboard)")
    max_tokens: int = Field(64, ge=1, le=1024, description="default answer length in tokens")
    corpus_texts: int | None = Field(None, ge=1, description="use only the first N corpus texts (bundled traces "
                                                              "and prompts) for feature pages and map labels")
    user: str | None = Field(None, description="name recorded with flags and scores (default: the login name)")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host must not be empty (127.0.0.1 keeps the dashboard on this machine)")
        return value

    @field_validator("server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http(s) URL such as http://127.0.0.1:8000, got {value!r}")
        return value.removesuffix("/v1")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def resolved_user(self) -> str:
        import getpass

        if self.user:
            return self.user
        try:
            return getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name (some containers): ask in the UI instead
            return ""
