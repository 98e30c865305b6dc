"""Preference data held in tables: Parquet files and directories, Arrow files, ``datasets`` directories, Hub ids.

:func:`open_table` opens one of

* a Parquet file, or a directory of them (``*.parquet`` below it, in name order; when file or
  folder names carry split names, ``train-00000-of-00002.parquet`` or ``test/...``, those of
  ``split``);
* an Arrow file (``*.arrow``: the IPC stream ``datasets`` writes, or an IPC file);
* a directory written by ``Dataset.save_to_disk`` (``state.json``), or by
  ``DatasetDict.save_to_disk`` (``dataset_dict.json``: its ``split``);
* a Hub id ``owner/name`` with a split (``datasets.load_dataset``), tried only when no local
  path of that name exists: a missing local path is never looked up on the network.

A table's rows are read in record batches (:meth:`Table.batches`), so reading a table holds
one batch at a time whatever its length. Image columns are recognised by their Arrow type: the
``datasets`` ``Image`` feature (a ``{bytes, path}`` struct), raw binary, or a list of either. A
cell with bytes becomes a :class:`TableImage`, a string naming the cell; a cell with only a path
becomes that path (relative to ``image_root``, else :attr:`Table.base_dir`). The bytes stay in
the table until an image is needed: :meth:`Table.images` gives random access to them through a
memory-mapped Arrow table (the ``datasets`` cache or ``save_to_disk`` files themselves; for
Parquet, whose pages are compressed, a one-time Arrow copy of the image columns under
``$VLALIGN_CACHE/tables``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlalign.errors import UserError

__all__ = ["SPLIT_WORDS", "ImageStore", "Table", "TableImage", "decode_image", "image_format", "looks_like_hub_id",
           "open_table"]

#: Folder and file-name words read as split names in a directory of Parquet files.
SPLIT_WORDS = ("train", "test", "validation", "valid", "dev", "eval")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_FILE_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json")
_CACHE_VERSION = 1


class TableImage(str):
    """An image embedded in a table: column ``column``, row ``row`` (0-based, over the whole table),
    item ``item`` of a list cell (None: the cell itself). ``name`` is the cell's ``path`` field, if any.

    The string itself reads ``column[row]`` or ``column[row][item]``, which is what messages show
    and what keeps a :class:`~vlalign.data.records.PreferenceRecord` hashable.
    """

    column: str
    row: int
    item: int | None
    name: str | None

    def __new__(cls, column: str, row: int, item: int | None = None, name: str | None = None) -> TableImage:
        self = super().__new__(cls, f"{column}[{row}]" if item is None else f"{column}[{row}][{item}]")
        self.column, self.row, self.item, self.name = column, row, item, name
        return self

    def __reduce__(self):
        return TableImage, (self.column, self.row, self.item, self.name)


def looks_like_hub_id(text: str) -> bool:
    """True for ``owner/name`` (one slash, no file suffix): what may be a Hugging Face Hub dataset id."""
    return bool(_HUB_ID.fullmatch(text)) and not text.lower().endswith(_FILE_SUFFIXES)


def image_format(data: bytes) -> str:
    """PIL's name for the format of encoded image bytes (``PNG``, ``JPEG``, ...), reading the header only;
    ValueError when they are no image PIL knows."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format)
    except (OSError, ValueError) as err:
        raise ValueError(f"embedded bytes are not an image ({err.__class__.__name__})") from None


def decode_image(data: bytes, context: str) -> Image.Image:
    """The RGB image encoded in ``data``; bytes that do not decode are a UserError led by ``context``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise UserError(f"{context}: cannot decode image ({err.__class__.__name__}: {err})") from None


# --- image columns ---------------------------------------------------------------------------

def _leaf_kind(kind: pa.DataType) -> str | None:
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_struct(kind):
        names = {kind.field(i).name: kind.field(i).type for i in range(kind.num_fields)}
        if set(names) == {"bytes", "path"} and (pa.types.is_binary(names["bytes"]) or pa.types.is_large_binary(names["bytes"])):
            return "struct"
    return None


def image_columns(schema: pa.Schema) -> dict[str, str]:
    """The image columns of ``schema``: name -> ``struct`` / ``binary`` (one image a cell) or
    ``list:struct`` / ``list:binary`` (a list of images a cell)."""
    found = {}
    for f in schema:
        leaf = _leaf_kind(f.type)
        if leaf is None and (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)):
            inner = _leaf_kind(f.type.value_type)
            leaf = f"list:{inner}" if inner else None
        if leaf:
            found[f.name] = leaf
    return found


class _ImageColumn:
    """One image column of a record batch: which cells hold bytes, their paths, and the bytes on demand."""

    def __init__(self, array: pa.Array, kind: str):
        self.listed = kind.startswith("list:")
        self.valid = array.is_valid().to_pylist()
        leaves = array.values if self.listed else array
        self.offsets = array.offsets.to_pylist() if self.listed else None
        if kind.endswith("struct"):
            fields = dict(zip((leaves.type.field(i).name for i in range(leaves.type.num_fields)), leaves.flatten()))
            self.data, paths = fields["bytes"], fields["path"].to_pylist()
        else:
            self.data, paths = leaves, [None] * len(leaves)
        self.has_bytes = self.data.is_valid().to_pylist()
        self.paths = paths

    def cells(self, column: str, start: int) -> list[Any]:
        """Each row's cell as vlalign reads it: a TableImage, a path, None, or a list of those."""
        def leaf(k: int, row: int, item: int | None) -> str | None:
            if self.has_bytes[k]:
                return TableImage(column, row, item, self.paths[k])
            return self.paths[k]

        if not self.listed:
            return [leaf(i, start + i, None) if ok else None for i, ok in enumerate(self.valid)]
        offsets = self.offsets
        return [[leaf(k, start + i, k - offsets[i]) for k in range(offsets[i], offsets[i + 1])] if ok else None
                for i, ok in enumerate(self.valid)]

    def bytes_at(self, position: int, item: int | None) -> bytes:
        k = position if item is None else self.offsets[position] + item
        return self.data[k].as_py()


@dataclass
class Batch:
    """A record batch of a table: rows ``first``... (0-based) of ``where`` (a file, or the whole table),
    rows ``start``... of the table; ``stem`` makes default ids for ``where``'s rows."""

    where: str
    stem: str
    first: int
    start: int
    data: pa.RecordBatch
    image_kinds: dict[str, str]
    _images: dict[str, _ImageColumn] = field(default_factory=dict, init=False, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """The batch's rows as dicts, image cells as :meth:`_ImageColumn.cells` gives them (no bytes copied)."""
        columns: dict[str, list[Any]] = {}
        for name in self.data.schema.names:
            array = self.data.column(name)
            kind = self.image_kinds.get(name)
            if kind:
                self._images[name] = _ImageColumn(array, kind)
                columns[name] = self._images[name].cells(name, self.start)
            else:
                columns[name] = array.to_pylist()
        return [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []

    def image_bytes(self, image: TableImage) -> bytes:
        """The bytes of an image of this batch (after :meth:`rows`)."""
        return self._images[image.column].bytes_at(image.row - self.start, image.item)


class ImageStore:
    """Random access to a table's embedded images: a memory-mapped Arrow table of (at least) its image columns."""

    def __init__(self, table: pa.Table, kinds: dict[str, str]):
        self.table, self.kinds = table, kinds

    def fetch(self, images: list[TableImage]) -> dict[TableImage, bytes]:
        """The bytes of each image, reading only the rows they are on."""
        out: dict[TableImage, bytes] = {}
        for column in sorted({image.column for image in images}):
            wanted = [image for image in images if image.column == column]
            rows = sorted({image.row for image in wanted})
            taken = self.table.column(column).take(pa.array(rows, pa.int64())).combine_chunks()
            reader = _ImageColumn(taken, self.kinds[column])
            position = {row: k for k, row in enumerate(rows)}
            for image in wanted:
                out[image] = reader.bytes_at(position[image.row], image.item)
        return out


class Table:
    """An opened table source. ``label`` names it in messages; ``stem`` makes default ids;
    relative image paths are relative to ``base_dir``."""

    label: str
    stem: str
    base_dir: Path
    schema: pa.Schema
    num_rows: int

    @property
    def image_kinds(self) -> dict[str, str]:
        return image_columns(self.schema)

    @property
    def metadata(self) -> dict[str, Any]:
        """The schema's JSON metadata (``huggingface`` features, ``vlalign`` marker), decoded."""
        out = {}
        for key, value in (self.schema.metadata or {}).items():
            try:
                out[key.decode()] = json.loads(value)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
        return out

    def batches(self, batch_size: int = 256) -> Iterator[Batch]:
        raise NotImplementedError

    def images(self) -> ImageStore:
        raise NotImplementedError


class ArrowTable(Table):
    """A table already in Arrow memory, memory-mapped from disk (``datasets`` files, Arrow files)."""

    def __init__(self, table: pa.Table, label: str, stem: str, base_dir: Path):
        self.table, self.label, self.stem, self.base_dir = table, label, stem, base_dir
        self.schema, self.num_rows = table.schema, table.num_rows

    def batches(self, batch_size: int = 256) -> Iterator[Batch]:
        start = 0
        for batch in self.table.to_batches(max_chunksize=batch_size):
            yield Batch(self.label, self.stem, start, start, batch, self.image_kinds)
            start += batch.num_rows

    def images(self) -> ImageStore:
        return ImageStore(self.table, self.image_kinds)


class ParquetTable(Table):
    """One Parquet file or several read one after another (rows numbered per file in messages)."""

    def __init__(self, files: list[Path], label: str, stem: str, base_dir: Path):
        self.files, self.label, self.stem, self.base_dir = files, label, stem, base_dir
        opened = [_parquet_file(f) for f in files]
        self.schema = opened[0].schema_arrow
        for f, handle in zip(files[1:], opened[1:]):
            if not handle.schema_arrow.remove_metadata().equals(self.schema.remove_metadata()):
                raise UserError(f"{f}: its columns differ from those of {files[0]} (one table is one schema)")
        self.num_rows = sum(handle.metadata.num_rows for handle in opened)

    def batches(self, batch_size: int = 256, columns: list[str] | None = None) -> Iterator[Batch]:
        start = 0
        kinds = self.image_kinds
        for path in self.files:
            first = 0
            for batch in _parquet_file(path).iter_batches(batch_size=batch_size, columns=columns):
                yield Batch(str(path), path.stem, first, start, batch, kinds)
                first += batch.num_rows
                start += batch.num_rows

    def images(self) -> ImageStore:
        """The image columns, copied once into an Arrow file under the cache (reused while the files are unchanged)."""
        kinds = self.image_kinds
        columns = sorted(kinds)
        stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        key = hashlib.sha256(json.dumps([_CACHE_VERSION, stats, columns]).encode()).hexdigest()[:32]
        path = _cache_dir() / f"{key}.arrow"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                schema = pa.schema([self.schema.field(c) for c in columns])
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                    for batch in self.batches(columns=columns):
                        writer.write_batch(batch.data)
                tmp.replace(path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        return ImageStore(table, kinds)


def _cache_dir() -> Path:
    """``$VLALIGN_CACHE/tables`` or ~/.cache/vlalign/tables: Arrow copies of Parquet image columns."""
    return Path(os.environ.get("VLALIGN_CACHE", Path.home() / ".cache" / "vlalign")) / "tables"


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path}: cannot read as Parquet ({err})") from None


# --- opening ---------------------------------------------------------------------------------

def _split_of(relative: Path) -> str | None:
    """The split a Parquet file's path names (``train-00000-of-00001.parquet``, ``test/x.parquet``), if any."""
    for part in (*relative.parent.parts, relative.stem):
        word = re.split(r"[-_.]", part, maxsplit=1)[0].lower()
        if word in SPLIT_WORDS:
            return word
    return None


def _parquet_dir(root: Path, split: str) -> ParquetTable:
    files = sorted(p for p in root.rglob("*.parquet")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    splits = {f: _split_of(f.relative_to(root)) for f in files}
    named = sorted({s for s in splits.values() if s})
    if named:
        files = [f for f in files if splits[f] == split]
        if not files:
            raise UserError(f"{root}: no Parquet files of split {split!r} (splits: {', '.join(named)}); pass --split")
    elif split != "train":
        raise UserError(f"{root}: its Parquet files name no splits, so they are all one table; drop --split {split}")
    return ParquetTable(files, str(root), root.name, root)


def _arrow_file(path: Path) -> ArrowTable:
    try:
        source = pa.memory_map(str(path))
        try:
            table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path}: cannot read as an Arrow file ({err})") from None
    return ArrowTable(table, str(path), path.stem, path.parent)


def _saved_dataset(root: Path, split: str) -> ArrowTable:
    import datasets

    label, where = str(root), root
    if (root / "dataset_dict.json").is_file():
        try:
            splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{root}/dataset_dict.json: not a DatasetDict's split list") from None
        if split not in splits:
            raise UserError(f"{root}: no split {split!r} (splits: {', '.join(map(str, splits))}); pass --split")
        where, label = root / split, f"{root} (split {split})"
    try:
        dataset = datasets.load_from_disk(str(where))
    except (OSError, ValueError, KeyError, FileNotFoundError) as err:
        raise UserError(f"{where}: cannot load the saved dataset ({err.__class__.__name__}: {err})") from None
    return ArrowTable(dataset.data.table, label, root.name, root)


def _hub(name: str, split: str) -> ArrowTable:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as err:  # the hub client raises many kinds (connection, offline, not found, auth)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(f"{name}: no such local path, and loading it from the Hugging Face Hub failed "
                        f"({err.__class__.__name__}: {first}); download it where the Hub is reachable and give "
                        "the local directory (save_to_disk) or its Parquet files") from None
    if not isinstance(dataset, datasets.Dataset):
        raise UserError(f"{name}: the Hub gave no single table for split {split!r}")
    return ArrowTable(dataset.data.table, name, name.split("/")[-1], Path.cwd())


def is_table(path: Path) -> bool:
    """True when ``path`` names a table source rather than a JSON Lines file (see :func:`open_table`)."""
    if path.is_dir():
        return True
    if path.exists():
        return path.suffix.lower() in (".parquet", ".arrow")
    return looks_like_hub_id(str(path))


def open_table(source: str | Path, split: str = "train") -> Table:
    """The table at ``source`` (see the module docstring); a UserError names what is wrong."""
    text = os.fspath(source)
    path = Path(text)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return ParquetTable([path], str(path), path.stem, path.parent)
        if suffix == ".arrow":
            return _arrow_file(path)
        raise UserError(f"{path}: not a table (.parquet or .arrow)")
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _saved_dataset(path, split)
        if any(path.rglob("*.parquet")):
            return _parquet_dir(path, split)
        raise UserError(f"{path}: neither a saved dataset (state.json, dataset_dict.json) nor a directory of Parquet files")
    if looks_like_hub_id(text):
        return _hub(text, split)
    raise UserError(f"{path}: no such file or directory")
