"""Writing outputs so that an interrupted run never leaves something that looks complete.

Everything is written under a temporary sibling name and renamed into place at the end; a
rename within one file system is atomic, so a reader sees either nothing or the whole output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vlalign.errors import UserError


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse a non-empty ``out`` unless ``overwrite``; return it as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: directory is not empty (pass --overwrite to replace it)")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block finishes.

    The old ``out`` (when ``overwrite``) is removed only after the new one is complete.
    """
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would outlive the rename
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, chunks: str | Iterable[str]) -> None:
    """UTF-8 text (a string, or pieces written one after another) under a temporary name, then renamed.

    On any failure (a bad piece, Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            for chunk in [chunks] if isinstance(chunks, str) else chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())  # the rename must not outrun the data on a crash
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any, indent: int | None = None) -> None:
    """Deterministic JSON (sorted keys), written to a temporary name and renamed."""
    write_text(path, json.dumps(data, sort_keys=True, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | Path, what: str = "") -> Any:
    """One JSON document; a missing file or bad JSON is a UserError naming the file (and ``what`` it is)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        return json.loads(data.decode("utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file" + (f" ({what})" if what else "")) from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data[: err.start].count(b"\n") + 1, err) from None


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file; a UserError names the file (and, for bytes that are not UTF-8,
    the line) if it cannot be read.

    Splits on "\n" only: ``str.splitlines`` also splits on U+2028 and friends, which JSON
    (and ``json.dumps(..., ensure_ascii=False)``) leaves unescaped inside strings. A byte-order
    mark and Windows line ends are tolerated.
    """
    path = Path(path)
    with _reading(path):
        data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data[: err.start].count(b"\n") + 1, err) from None
    return [line.removesuffix("\r") for line in text.split("\n")]


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines :func:`read_lines` gives (its split, its messages), one at a time, so that a large
    file is never held whole (a last line ending in "\n" is not followed by an empty one)."""
    path = Path(path)
    with _reading(path), path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, number, err) from None
            yield line.removesuffix("\n").removesuffix("\r")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def _not_utf8(path: Path, line: int, err: UnicodeDecodeError) -> UserError:
    return UserError(f"{path}: line {line}: not UTF-8 text ({err.reason})")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; a UserError names file and line."""
    path = Path(path)
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {lineno}: expected a JSON object")
        yield lineno, row


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """One JSON object a line, sorted keys, under a temporary name then renamed; returns the count.

    On any failure (a bad row, Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for row in rows:
            yield json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n"
            count += 1

    write_text(path, lines())
    return count


def cut_torn_line(path: str | Path) -> bytes:
    """Cut an append-only log's last line if a kill left it unterminated (it is redone); returns the
    complete lines' bytes."""
    data = Path(path).read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with Path(path).open("r+b") as f:
            f.truncate(len(complete))
    return complete


class JsonlAppender:
    """A JSON Lines output that survives being killed: one complete line per ``write``.

    Each record goes to the file in a single ``os.write`` of the whole line, so a killed
    process leaves at most one unterminated line at the end; opening the file again cuts that
    line off and reads the ids already written, so a rerun skips them (``done``).
    """

    def __init__(self, path: str | Path, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.done: set[str] = set()
        if self.path.exists():
            complete = cut_torn_line(self.path)
            # split on "\n" only: text written with ensure_ascii=False may hold U+2028 and friends
            for lineno, line in enumerate(complete.decode("utf-8", errors="replace").split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    self.done.add(str(json.loads(line)[key]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{self.path}: line {lineno}: not a record of this job (no {key!r}); "
                                    "choose another --out or remove the file") from None
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode()
        while data:  # os.write may write less than asked; the loop finishes the line
            data = data[os.write(self._fd, data):]
        self.done.add(str(row[self.key]))

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
