"""The GGUF files a person already has: found where the usual tools keep them, read, paired, named.

Nothing is downloaded. The stores, each at the place its own tool looks:
- the Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
  (`models--ORG--REPO/snapshots/REV/FILE.gguf`), named `hf:ORG/REPO/FILE`;
- Ollama's store: $OLLAMA_MODELS, else ~/.ollama/models and the Linux service's /usr/share/ollama/.ollama/models
  (`manifests/HOST/NAMESPACE/NAME/TAG`, a JSON whose model layer names `blobs/sha256-...`), named `ollama:NAME:TAG`;
- LM Studio's models folder (`PUBLISHER/REPO/FILE.gguf` under the home that ~/.lmstudio-home-pointer names,
  ~/.lmstudio or ~/.cache/lm-studio; its settings.json's downloadsFolder where set), named `lmstudio:PUBLISHER/REPO/FILE`;
- llama.cpp's cache: $LLAMA_CACHE, else $XDG_CACHE_HOME/llama.cpp or ~/.cache/llama.cpp, named `llamacpp:FILE`
  (`llamacpp:ORG/REPO/FILE` where it keeps the Hugging Face layout).

Each file's metadata is read with the `gguf` package that llama.cpp publishes (a memory map: no tensor
is read) and remembered by path, size and mtime. Two files make an LLM/sLM pair only when their
tokenizers are the same: the same token list, special token ids and tokenizer model, by hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .errors import DriftError
from .fileio import memoized

STORES = ("hf", "ollama", "lmstudio", "llamacpp")
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
METADATA_FILE = "gguf_metadata.json"  # in the cache directory: a file's metadata by path, size and mtime
METADATA_FIELD = "metadata_v1"  # a new name when what is read, or how the tokenizer is hashed, changes
_LATER_SPLIT = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")  # llama.cpp loads a split model from its first part


@dataclass(frozen=True)
class Found:
    """One GGUF file in a store. `repo` and `file` are the parts of its name (Ollama: model and tag)."""

    store: str
    repo: str
    file: str
    path: Path

    @property
    def name(self) -> str:
        if self.store == "ollama":
            return f"ollama:{self.repo}:{self.file}"
        return f"{self.store}:{self.repo}/{self.file}" if self.repo else f"{self.store}:{self.file}"


def _home() -> Path:
    return Path.home()


def hf_cache() -> Path:
    """Where huggingface_hub keeps its cache (the variables it reads, in its order)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or _home() / ".cache") / "huggingface" / "hub"


def ollama_dirs() -> list[Path]:
    if os.environ.get("OLLAMA_MODELS"):
        return [Path(os.environ["OLLAMA_MODELS"]).expanduser()]
    return [_home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def lmstudio_dirs() -> list[Path]:
    """LM Studio's models folders. It has no variable; its home is named by ~/.lmstudio-home-pointer."""
    homes = []
    try:
        homes.append(Path((_home() / ".lmstudio-home-pointer").read_text(encoding="utf-8").strip().splitlines()[0]))
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    homes += [_home() / ".lmstudio", _home() / ".cache" / "lm-studio"]
    folders = []
    for home in homes:
        try:
            folder = json.loads((home / "settings.json").read_text(encoding="utf-8")).get("downloadsFolder")
        except (OSError, ValueError, AttributeError):
            folder = None
        folders.append(Path(folder).expanduser() if isinstance(folder, str) and folder else home / "models")
    return list(dict.fromkeys(folders))


def llamacpp_cache() -> Path:
    """llama.cpp's download cache (its fs_get_cache_directory)."""
    if os.environ.get("LLAMA_CACHE"):
        return Path(os.environ["LLAMA_CACHE"]).expanduser()
    if sys.platform == "darwin":
        return _home() / "Library" / "Caches" / "llama.cpp"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", _home())) / "llama.cpp"
    return Path(os.environ.get("XDG_CACHE_HOME") or _home() / ".cache") / "llama.cpp"


def _ggufs(folder: Path) -> Iterator[Path]:
    """The GGUF files under a folder that llama.cpp would load: existing files, a split model's first part only."""
    try:
        paths = sorted(folder.rglob("*.gguf"))
    except OSError:
        return
    for path in paths:
        split = _LATER_SPLIT.search(path.name)
        if path.is_file() and not (split and split.group(1) != "00001"):
            yield path


def _hf_layout(root: Path, store: str) -> Iterator[Found]:
    """`models--ORG--REPO/snapshots/REV/...`: a file in several revisions is the one of refs/main, else the newest."""
    try:
        repos = sorted(p for p in root.glob("models--*") if p.is_dir())
    except OSError:
        return
    for repo_dir in repos:
        repo = repo_dir.name[len("models--"):].replace("--", "/", 1)
        try:
            main = (repo_dir / "refs" / "main").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            main = None
        snapshots = [p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()]
        snapshots.sort(key=lambda p: (p.name != main, -p.stat().st_mtime))
        seen = set()
        for snapshot in snapshots:
            for path in _ggufs(snapshot):
                file = path.relative_to(snapshot).as_posix()
                if file not in seen:
                    seen.add(file)
                    yield Found(store, repo, file, path)


def _ollama(root: Path) -> Iterator[Found]:
    """Ollama's manifests: `registry.ollama.ai/library/NAME/TAG` is NAME:TAG, as `ollama list` shows it."""
    manifests = root / "manifests"
    try:
        entries = sorted(p for p in manifests.rglob("*") if p.is_file())
    except OSError:
        return
    for manifest in entries:
        parts = manifest.relative_to(manifests).parts
        if len(parts) != 4:
            continue
        host, namespace, model, tag = parts
        name = model if namespace == "library" else f"{namespace}/{model}"
        name = name if host == "registry.ollama.ai" else f"{host}/{name}"
        try:
            layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
            digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER)
        except (OSError, ValueError, AttributeError, KeyError, TypeError, StopIteration):
            continue  # not a model (an embedding's adapter, a half-pulled manifest) or unreadable
        blob = root / "blobs" / str(digest).replace(":", "-")
        if blob.is_file():
            yield Found("ollama", name, tag, blob)


def _lmstudio(root: Path) -> Iterator[Found]:
    for path in _ggufs(root):
        parts = path.relative_to(root).parts
        if len(parts) >= 3:  # LM Studio lists PUBLISHER/REPO/FILE only
            yield Found("lmstudio", "/".join(parts[:2]), "/".join(parts[2:]), path)


def _llamacpp(root: Path) -> Iterator[Found]:
    yield from _hf_layout(root, "llamacpp")
    for path in _ggufs(root):
        file = path.relative_to(root).as_posix()
        if not file.startswith("models--"):
            yield Found("llamacpp", "", file, path)


def store_folders() -> dict[str, list[Path]]:
    return {"hf": [hf_cache()], "ollama": ollama_dirs(), "lmstudio": lmstudio_dirs(), "llamacpp": [llamacpp_cache()]}


_WALKERS = {"hf": lambda root: _hf_layout(root, "hf"), "ollama": _ollama, "lmstudio": _lmstudio, "llamacpp": _llamacpp}


def find_files() -> list[Found]:
    """Every GGUF file in the stores, by name; reads no file."""
    found: dict[str, Found] = {}
    for store, folders in store_folders().items():
        for root in folders:
            for f in _WALKERS[store](root):
                found.setdefault(f.name, f)  # a name in two folders (the user's and the system's): the first
    return list(found.values())


def _read(path: Path) -> dict:
    """A GGUF's metadata and tokenizer identity, by the gguf package's reader (tensors stay on disk)."""
    from gguf import GGUFReader

    try:
        return _metadata(path, GGUFReader(path))
    except (ValueError, KeyError, IndexError, TypeError, OSError) as e:  # a truncated or foreign file
        raise DriftError(f"{path}: not a readable GGUF file ({e})") from None


def _metadata(path: Path, reader) -> dict:
    from gguf import LlamaFileType

    def value(key: str):
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise DriftError(f"{path}: has no token list, so it is no language model (a vision projector?)")
    specials = {k.removeprefix("tokenizer.ggml."): int(value(k)) for k in reader.fields
                if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")}
    h = hashlib.sha256(json.dumps({"model": value("tokenizer.ggml.model"), "special": specials},
                                  sort_keys=True).encode())
    for i in tokens.data:  # each token length-prefixed, so no two lists hash alike by concatenation
        token = tokens.parts[i].tobytes()
        h.update(len(token).to_bytes(8, "little") + token)
    architecture = value("general.architecture")
    file_type = value("general.file_type")
    try:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quantization = f"file type {file_type}"
    return {"model": value("general.name"), "architecture": architecture,
            "parameters": sum(t.n_elements for t in reader.tensors), "size_label": value("general.size_label"),
            "quantization": quantization, "vocabulary": len(tokens.data),
            "context_length": value(f"{architecture}.context_length"),
            "chat_template": bool(value("tokenizer.chat_template")), "tokenizer": h.hexdigest()}


def read_metadata(path: Path) -> dict:
    """`_read`, remembered in the cache by path, size and mtime: a large vocabulary takes seconds to parse."""
    return memoized(path, METADATA_FILE, METADATA_FIELD, _read, valid=lambda v: isinstance(v, dict))


def _matches(found: Found, query: str) -> tuple[bool, bool]:
    """(matches at all, matches exactly) for the part of a name after `store:`.

    A repo alone names its one file; a file is named by its path, its file name, or a piece of its name
    such as the quantization (`hf:ORG/REPO/Q4_K_M`); an Ollama name without a tag means `:latest`.
    """
    if found.store == "ollama":
        tagged = query if ":" in query.rsplit("/", 1)[-1] else f"{query}:latest"
        return tagged == f"{found.repo}:{found.file}", True
    if found.repo:
        if query == found.repo:
            return True, False
        if not query.startswith(found.repo + "/"):
            return False, False
        query = query[len(found.repo) + 1:]
    base = found.file.rsplit("/", 1)[-1]
    exact = query in (found.file, base)
    return exact or query.lower() in base.lower(), exact


def _listing(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "") if names else "none"


def resolve(spec: str) -> Path:
    """The file a store name (`hf:`, `ollama:`, `lmstudio:`, `llamacpp:`) addresses on this machine."""
    store, _, query = spec.partition(":")
    found = [f for f in find_files() if f.store == store]
    hits = [(f, exact) for f in found for match, exact in [_matches(f, query)] if match]
    exact = [f for f, e in hits if e]
    chosen = exact if exact else [f for f, _ in hits]
    if len(chosen) == 1:
        return chosen[0].path
    if chosen:
        raise DriftError(f"{spec} is ambiguous: it names {_listing([f.name for f in chosen])}; give one of them")
    folders = ", ".join(map(str, store_folders()[store]))
    raise DriftError(f"{spec}: no such model in the {store} store ({folders}); "
                     f"found there: {_listing([f.name for f in found])}")


def is_store_name(spec: Optional[str]) -> bool:
    return bool(spec) and spec.partition(":")[0] in STORES and ":" in spec


def survey(presets: Sequence[tuple[str, Path]] = ()) -> dict:
    """The models on this machine (the given ready presets and the store files), their metadata and compatible
    pairs."""
    rows, unreadable = [], []
    candidates = [(name, "preset", path) for name, path in presets]
    candidates += [(f.name, f.store, f.path) for f in find_files()]
    for name, store, path in candidates:
        try:
            meta = read_metadata(path)
        except (DriftError, OSError) as e:
            unreadable.append({"name": name, "path": str(path), "reason": str(e)})
            continue
        rows.append({"name": name, "store": store, "path": str(path), "size": path.stat().st_size, **meta})
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["tokenizer"], []).append(row)
    # An LLM is at least as large as its sLM; a file pairs with itself, as the default model does.
    pairs = [{"llm": a["name"], "slm": b["name"], "tokenizer": a["tokenizer"]}
             for group in groups.values() for a in group for b in group if a["parameters"] >= b["parameters"]]
    tokenizers = [{"tokenizer": t, "vocabulary": g[0]["vocabulary"],
                   "models": [r["name"] for r in sorted(g, key=lambda r: -r["parameters"])]} for t, g in groups.items()]
    return {"found": rows, "unreadable": unreadable, "tokenizers": tokenizers, "pairs": pairs}


def survey_text(report: dict) -> str:
    """`survey()` for a terminal: one line per store file (the presets have their own table), then the
    groups that share a tokenizer."""
    files = [r for r in report["found"] if r["store"] != "preset"]
    lines = ["GGUF files in the Hugging Face, Ollama, LM Studio and llama.cpp caches (nothing is downloaded):"]
    lines += [] if files or report["unreadable"] else ["  none"]
    for r in files:
        n = r["parameters"]
        params = r["size_label"] or (f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M")
        template = "" if r["chat_template"] else ", no chat template"
        lines += [f"  {r['name']}", f"      {r['architecture'] or '?'}, {params}, {r['quantization'] or '?'}, "
                                   f"{r['vocabulary']:,} tokens{template}: {r['path']}"]
    for u in report["unreadable"]:
        lines += [f"  {u['name']}", f"      skipped: {u['reason']}"]
    lines.append("\nCompatible LLM/sLM pairs share a tokenizer (token list, special tokens, model):")
    for t in report["tokenizers"]:
        models = t["models"]
        lines.append(f"  tokenizer {t['tokenizer'][:12]} ({t['vocabulary']:,} tokens): {', '.join(models)}")
        lines.append(f"    e.g. --llm {models[0]} --slm {models[-1]}")
    return "\n".join(lines)
