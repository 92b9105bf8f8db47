"""Where the cache lives and whether robaug may use the network (read from the environment at call time)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_cache_dir", "offline_reason", "hf_endpoint", "hf_token", "hf_hub_cache"]

_TRUE = {"1", "true", "yes", "on", "y", "t"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` argument > ``$ROBAUG_CACHE`` > ``$XDG_CACHE_HOME/robaug`` > ``~/.cache/robaug``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ROBAUG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "robaug"


def hf_hub_cache() -> Path:
    """The Hugging Face Hub cache diffusers / huggingface_hub download into: ``$HF_HUB_CACHE`` >
    ``$HF_HOME/hub`` > ``$XDG_CACHE_HOME/huggingface/hub`` > ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def offline_reason(local_files_only: bool = False) -> str | None:
    """Why downloads are disabled (a short phrase for error messages), or ``None`` when they are allowed."""
    if local_files_only:
        return "local_files_only=True"
    for var in ("ROBAUG_OFFLINE", "HF_HUB_OFFLINE"):
        if _env_true(var):
            return f"{var}={os.environ[var]}"
    return None


def hf_endpoint() -> str:
    """The Hugging Face Hub endpoint: ``$HF_ENDPOINT`` or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_token() -> str | None:
    """The user's Hub token if they are logged in (``HF_TOKEN`` or ``hf auth login``), else ``None``."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.environ.get("HF_TOKEN") or None
    try:
        return get_token()
    except Exception:  # a broken token setup must not break public downloads
        return None
