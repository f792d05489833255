"""Small file helpers: the one reader of user documents, output checks and atomic writes.

Every problem is a one-line DriftError naming the file (and the line where there is one).
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import DriftError

# Far above any real pairs, profile or attributes file, and small enough to parse in memory.
MAX_DOCUMENT_BYTES = 256 << 20
# Deeper nesting than any valid document has; deeper data would only recurse without end.
MAX_DEPTH = 64
BOM = b"\xef\xbb\xbf"  # as spreadsheet programs and Windows editors write it


def read_text(path: str | os.PathLike, where: Optional[str] = None) -> str:
    """A regular file of at most MAX_DOCUMENT_BYTES, as UTF-8 text without a leading BOM."""
    where = where or os.fspath(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise DriftError(f"{where}: is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise DriftError(f"{where}: not a regular file")
        if st.st_size > MAX_DOCUMENT_BYTES:
            raise DriftError(f"{where}: {st.st_size} bytes, more than the {MAX_DOCUMENT_BYTES} bytes drift-cpp reads")
        with open(path, "rb") as f:
            raw = f.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise DriftError(f"{where}: file not found") from None
    except OSError as e:
        raise DriftError(f"{where}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_DOCUMENT_BYTES:  # it grew after the stat
        raise DriftError(f"{where}: more than the {MAX_DOCUMENT_BYTES} bytes drift-cpp reads")
    return decode_utf8(raw[len(BOM):] if raw.startswith(BOM) else raw, where)


def decode_utf8(raw: bytes, where: str, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw[: e.start].count(b"\n")
        raise DriftError(f"{where}:{line}: not valid UTF-8") from None


def check_utf8(text: str, where: str) -> str:
    """`text` unchanged if it can be written as UTF-8 (a lone surrogate, as from undecodable argv, cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DriftError(f"{where}: not valid UTF-8") from None
    return text


def parse_json(text: str, where: str, first_line: int = 1) -> Any:
    """JSON with errors as '<where>:<line>: invalid JSON: <what> (column <n>)'; nesting is capped."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DriftError(f"{where}:{first_line + e.lineno - 1}: invalid JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise DriftError(f"{where}: invalid JSON: {e}") from None
    except RecursionError:
        raise DriftError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep") from None
    return _check_depth(value, where, "JSON")


_TOML_AT = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)


def parse_toml(text: str, where: str) -> Any:
    """TOML with the same error wording as parse_json."""
    try:
        value = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_AT.match(str(e))
        if m:
            raise DriftError(f"{where}:{m[2]}: invalid TOML: {m[1]} (column {m[3]})") from None
        raise DriftError(f"{where}: invalid TOML: {e}") from None
    except ValueError as e:
        raise DriftError(f"{where}: invalid TOML: {e}") from None
    except RecursionError:
        raise DriftError(f"{where}: TOML nested more than {MAX_DEPTH} levels deep") from None
    return _check_depth(value, where, "TOML")


def read_document(path: str | os.PathLike, where: Optional[str] = None) -> Any:
    """A .json or .toml file, parsed (read_text, then parse_json or parse_toml)."""
    where = where or os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".toml"):
        raise DriftError(f"{where}: unsupported file type '{Path(path).suffix}' (use .toml or .json)")
    text = read_text(path, where)
    return parse_toml(text, where) if suffix == ".toml" else parse_json(text, where)


def _check_depth(value: Any, where: str, kind: str) -> Any:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_DEPTH:
                    raise DriftError(f"{where}: {kind} nested more than {MAX_DEPTH} levels deep")
                stack.append((child, depth + 1))
    return value


def check_output(path: str | os.PathLike, inputs: Iterable[Optional[str | os.PathLike]] = ()) -> None:
    """Refuse, before any work, an output path that cannot be written or is one of the inputs.

    Nothing is created: the directory must exist and be writable, the path must not be a directory.
    """
    where = os.fspath(path)
    target = Path(path)
    for source in inputs:
        if source is not None and _same_file(target, Path(source)):
            raise DriftError(f"{where}: is also the input {os.fspath(source)}; write the output elsewhere")
    if target.is_dir():
        raise DriftError(f"{where}: is a directory; give a file name")
    parent = target.parent
    if not parent.exists():
        raise DriftError(f"{where}: directory {parent} does not exist")
    if not parent.is_dir():
        raise DriftError(f"{where}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DriftError(f"{where}: directory {parent} is not writable")
    if target.exists() and not target.is_file():
        raise DriftError(f"{where}: not a regular file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so readers see the old file or the new one, never a part."""
    atomic_write_bytes(path, text.encode("utf-8"))


def plain_mode(path: str | os.PathLike) -> None:
    """mkstemp creates files 0600; give one the mode a plain open() would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """The temp file lives in the same directory so ``os.replace`` stays on one filesystem.

    A failure (full disk, no permission) leaves the old file as it was and is one DriftError.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DriftError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            plain_mode(tmp)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise DriftError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    """A matplotlib figure as PNG, written atomically like every other output."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def cache_dir() -> Path:
    """drift-cpp's cache: $DRIFT_CPP_CACHE, else $XDG_CACHE_HOME/drift-cpp, else ~/.cache/drift-cpp."""
    if os.environ.get("DRIFT_CPP_CACHE"):
        return Path(os.environ["DRIFT_CPP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "drift-cpp"


def memoized(path: Path, memo_file: str, field: str, compute, valid=lambda value: True):
    """compute(resolved path), remembered in the cache directory's `memo_file` by (resolved path, size,
    mtime) and computed again only when the file changes. The memo is an optimization: when it cannot
    be read or written, the value is simply computed."""
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    memo_path = cache_dir() / memo_file
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        entry = memo.get(key) if isinstance(memo, dict) else None
        if isinstance(entry, dict) and entry.get("stamp") == stamp and field in entry and valid(entry[field]):
            return entry[field]
    except (OSError, ValueError):
        memo = {}
    value = compute(path)
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = {"stamp": stamp, field: value}
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    except (OSError, DriftError):  # a read-only cache: the value is right, only not remembered
        pass
    return value
