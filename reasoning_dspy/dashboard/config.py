"""`DashboardConfig`: every setting of `reasoning-dspy dashboard`, one pydantic model for the Python
API and the CLI flags (each field's description is its `--help` text)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Environment variable holding `user:password` for the browser login when `auth` is not given.
AUTH_ENV = "REASONING_DSPY_DASHBOARD_AUTH"


def default_cache_dir() -> Path:
    """`<reasoning-dspy cache>/dashboard`: corpus activations and map layouts, reused across starts."""
    from reasoning_dspy.models.gguf import cache_root

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
    auth: str | None = Field(None, description=f"'user:password' the browser must log in with (default: ${AUTH_ENV}; "
                                               "none: open to whoever reaches the port)")
    sae_roots: list[Path] | None = Field(None, description="folders the SAE box may load SAEs and scores from, "
                                                           "besides the shipped SAEs (default: the working directory)")
    max_upload_mb: float = Field(5.0, gt=0, le=1024, allow_inf_nan=False,
                                 description="largest file a browser may upload, in MB")

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

    @field_validator("sae_roots")
    @classmethod
    def _sae_roots(cls, value: list[Path] | None) -> list[Path] | None:
        for root in value or ():
            if not Path(root).expanduser().is_dir():
                raise ValueError(f"{str(root)!r} is not an existing folder; give folders that hold SAEs")
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str | None) -> str | None:
        if value is not None:
            _split_auth(value)
        return value

    def resolved_auth(self) -> tuple[str, str] | None:
        """`(user, password)` for Gradio's login: `auth`, else the environment variable, else none."""
        value = self.auth or os.environ.get(AUTH_ENV) or None
        return _split_auth(value) if value is not None else None

    def resolved_sae_roots(self) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in (self.sae_roots or [Path.cwd()])]

    def exposure_warning(self) -> str | None:
        """What to warn about when the dashboard is reachable beyond this machine without a login."""
        from reasoning_dspy.serve.config import is_loopback

        if is_loopback(self.host) or self.resolved_auth() is not None:
            return None
        return (f"the dashboard listens on {self.host} without a login: anyone who can reach port {self.port} can "
                f"run the model and write to the tracking database; set auth='user:password' (or ${AUTH_ENV}), "
                "or bind 127.0.0.1")

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


def _split_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError(f"auth must be 'user:password' with both parts, got {len(value)} characters without them "
                         f"(${AUTH_ENV} takes the same form)")
    return user.strip(), password
