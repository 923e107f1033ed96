"""Files that survive being killed at any instant: atomic whole-file writes and append-only JSON lines.

* whole-file records are written atomically (temp file in the same directory, fsync, rename): a reader sees
  the old version or the new one, never half of one;
* logs are append-only JSON lines, one ``write`` per record; a crash can leave only the last line partial,
  so readers skip (and count) an undecodable line instead of failing;
* a log can be cut back to a step (`truncate_jsonl`) when a run resumes from an older checkpoint, so the
  steps it replays are not recorded twice.

No torch, no pandas: everything that reads or writes a run directory imports this.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

PathLike = str | os.PathLike


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (the directory entry), where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"


def unwritable(path: PathLike, kind: str | None = None) -> str | None:
    """Why ``path`` (existing or still to be created, with anything below it) cannot be written here, or None:
    its nearest existing ancestor is a file, or a directory this process may not write into, or it exists as
    the wrong ``kind`` ('dir' or 'file'). Asked before any work starts, so a read-only target fails in one
    line with nothing written. ``os.access`` is the kernel's own answer: a read-only mount is refused to root
    too, while permission bits are not (root writes through them, so for root they are no obstacle)."""
    path = Path(path).absolute()
    if kind == "dir" and path.exists() and not path.is_dir():
        return f"{path} is a file, not a directory"
    if kind == "file" and path.is_dir():
        return f"{path} is a directory, not a file"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir():
        return None if os.access(existing, os.W_OK | os.X_OK) else f"{existing} is not writable"
    if existing != path:
        return f"{existing} is a file, not a directory"
    folder = path.parent  # an existing file is replaced by a rename in its directory
    return None if os.access(folder, os.W_OK | os.X_OK) else f"{folder} is not writable"


def remove_stray_temp_files(directory: PathLike) -> list[str]:
    """Delete what `atomic_write` leaves when its process is killed between creating its temp file and the
    rename (``.<name>.<random>.tmp``); only the owner of ``directory``'s files may call this. Returns the names."""
    gone = []
    for p in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        try:
            p.unlink()
            gone.append(p.name)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            pass
    return gone


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Stream into a temp file beside ``path`` and rename it into place; on any error the temp file goes
    and ``path`` keeps its previous content. Same directory, so the rename never crosses filesystems."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
    """Paths and numpy scalars turn up in summaries; anything else unknown is a bug worth raising on."""
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=json_default) + "\n")


def atomic_write_yaml(path: PathLike, obj: Any) -> Path:
    import yaml  # imported here: only config writers need it

    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_json(path: PathLike) -> dict[str, Any] | None:
    """A record file, or None when absent or unreadable (an atomic writer never leaves it partial, but a
    hand-edited or foreign file might be)."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except (FileNotFoundError, ValueError, IsADirectoryError, NotADirectoryError):
        return None
    return obj if isinstance(obj, dict) else None


# ----------------------------------------------------------------------------------------- JSON lines
def append_jsonl(path: PathLike, obj: Any) -> None:
    """Append one record as a single ``write`` (O_APPEND), flushed and fsynced.

    If a previous writer died mid-line the file does not end in a newline; we start with one so our record
    is not glued onto the fragment (the fragment then reads as one bad line that readers skip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, separators=(",", ":"), default=json_default) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Records:
    """A JSON-lines file as read: its records, and how many lines could not be decoded (a crash's torn last
    line, or a fragment that later appends followed)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def read_records(path: PathLike) -> Records:
    """Every record of a JSON-lines file (none when it does not exist), with the count of bad lines."""
    out = Records()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return out
    with f:
        for raw in f:
            if not raw.strip():
                continue
            obj = _decode(raw)
            if obj is None:
                out.bad_lines += 1
            else:
                out.rows.append(obj)
    return out


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    return read_records(path).rows


def iter_jsonl(path: PathLike) -> Iterator[dict[str, Any]]:
    yield from read_records(path).rows


def tail_jsonl(path: PathLike, n: int = 1, max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The last ``n`` complete records, reading backwards in blocks: a multi-GB metrics log costs a few
    KB of I/O. Gives up after ``max_bytes`` (a pathological single huge line)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        buf, pos, block = b"", end, 8192
        while pos > 0 and buf.count(b"\n") <= n and end - pos < max_bytes:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            block *= 2
    lines = buf.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may start mid-line
    out: list[dict[str, Any]] = []
    for raw in reversed(lines):
        if len(out) == n:
            break
        if raw.strip():
            obj = _decode(raw)
            if obj is not None:
                out.append(obj)
    return out[::-1]


def truncate_jsonl(path: PathLike, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite a log atomically with only the records ``keep`` accepts (torn lines go too); returns how many
    were dropped. Used when a run resumes: the records of steps after its checkpoint are about to be
    written again, and every step must appear once."""
    path = Path(path)
    if not path.exists():
        return 0
    rec = read_records(path)
    kept = [r for r in rec.rows if keep(r)]
    dropped = len(rec.rows) - len(kept) + rec.bad_lines
    if dropped:
        text = "".join(json.dumps(r, separators=(",", ":"), default=json_default) + "\n" for r in kept)
        atomic_write_text(path, text)
    return dropped
