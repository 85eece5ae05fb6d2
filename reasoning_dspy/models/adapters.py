"""Adapters as models: `load_model("smollm2-reasoner")` or `load_model("path/to/adapter")`.

A LoRA adapter folder written by `finetune` (PEFT layout plus `reasoner.json`, which names the base
model) loads like any model: the first load merges it into its base and saves the result under the
user cache, like a converted GGUF file; later loads read that folder. The cached copy is keyed by a
hash of the adapter's files, so a rebuilt adapter is merged again and a stale one is never served.

The adapters that ship inside this package (`reasoning_dspy/data/<name>/`) are listed, with what
ships beside each, in `models.shipped`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from reasoning_dspy.models.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE
from reasoning_dspy.models.shipped import SHIPPED, package_folder, shipped_names
from reasoning_dspy.models.spec import LoadedModel, ModelLoadError

#: Adapters shipped in `reasoning_dspy/data/`, by the model name they load under (`models.shipped`).
SHIPPED_ADAPTERS: tuple[str, ...] = shipped_names()


def shipped_adapter(name: str) -> Path:
    """The folder of a shipped adapter, with a clear error when the package lacks its files."""
    folder = package_folder(name)
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE) if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(f"{name!r} is shipped as a LoRA adapter in {folder}, but {', '.join(missing)} "
                             f"is missing there; reinstall reasoning-dspy, or rebuild it with `{SHIPPED[name].rebuild}` "
                             "and copy OUT/adapter/ there")
    return folder


def is_adapter_folder(path: Path) -> bool:
    """A folder `finetune` wrote: PEFT's files plus `reasoner.json` naming the base model."""
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and (path / INFO_FILE).is_file()


def adapter_fingerprint(folder: Path) -> str:
    """Hash of the adapter's weights, config and record: what the merged copy is keyed by."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:24]


def merged_folder(adapter: Path, name: str, load_model: Callable[..., LoadedModel]) -> Path:
    """The safetensors folder of `adapter` merged into its base model, merging it first if needed;
    `load_model` loads the base (the loader passes itself, so this module never imports it)."""
    from reasoning_dspy.models.adapter_files import AdapterError, adapter_info, load_adapter
    from reasoning_dspy.models.gguf import cached_folder

    def write(out: Path) -> None:
        try:
            info = adapter_info(adapter)
            if not info.get("base_model"):
                raise AdapterError(f"{adapter / INFO_FILE} does not name the adapter's base model")
            merged = load_adapter(load_model(info["base_model"], dtype="float32"), adapter)
        except AdapterError as err:
            raise ModelLoadError(f"cannot load {name!r}: {err}") from err
        merged.model.config._name_or_path = name
        merged.model.save_pretrained(out)
        merged.tokenizer.save_pretrained(out)

    return cached_folder(name, adapter_fingerprint(adapter), write, source=str(adapter))
