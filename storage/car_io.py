"""CAR files in and out of the block store (`dre dag export` / `dre dag import`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dre.protocol.car import CarDecoder, CarHeader, EndOfCar, NeedData, encode_block, encode_header
from dre.protocol.cid import CID, Block
from dre.protocol.errors import IntegrityError, NotFoundError, ValidationError
from dre.protocol.links import SUPPORTED_CODECS, iter_dag, links_of

from .blockstore import BlockStore

__all__ = ["CarImportResult", "export_car", "import_car", "read_car_file"]

_READ_SIZE = 1 << 20
_BATCH_BYTES = 16 << 20

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class CarImportResult:
    """What a CAR import did."""

    roots: list[CID]
    pinned: list[CID]
    incomplete_roots: list[CID]
    blocks: int
    bytes: int


def export_car(
    store: BlockStore, root: CID, out: BinaryIO, progress: ProgressCallback | None = None
) -> int:
    """Write the whole DAG under ``root`` as a CARv1 to ``out``; returns the number of blocks.

    Raises :class:`NotFoundError` if a block of the DAG is missing (the caller discards ``out``).
    """
    out.write(encode_header([root]))
    count = 0
    for cid, data in iter_dag(store.get, root):
        out.write(encode_block(cid, data))
        count += 1
        if progress is not None:
            progress(len(data))
    return count


def read_car_file(
    path: Path, progress: ProgressCallback | None = None
) -> Iterator[CarHeader | Block]:
    """Stream the header and then every block of the CAR at ``path``, each block verified."""
    decoder = CarDecoder(verify=True)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise ValidationError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}") from None
    with fh:
        eof = False
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                if eof:  # the decoder must say EndOfCar or raise once it has seen EOF
                    raise AssertionError("CAR decoder asked for data after end of input")
                chunk = fh.read(_READ_SIZE)
                eof = not chunk
                decoder.receive_data(chunk)
                if progress is not None:
                    progress(len(chunk))
            elif isinstance(event, EndOfCar):
                return
            else:
                yield event


def import_car(
    store: BlockStore,
    path: Path,
    *,
    pin_roots: bool = True,
    progress: ProgressCallback | None = None,
) -> CarImportResult:
    """Import every block of the CAR at ``path``; pin each root whose DAG is complete.

    The file is read twice: first to verify every block against its CID and the framing to the
    last byte, so a corrupt or truncated CAR is refused with the store unchanged; then to store.
    """
    if path.is_dir():
        raise ValidationError(f"{path}: is a directory, not a CAR file")
    roots: list[CID] = []
    for event in read_car_file(path, progress):
        if isinstance(event, CarHeader):
            roots = list(event.roots)
        elif event.cid.codec.code in SUPPORTED_CODECS:
            # Hashes were checked by the decoder; this checks the encoding is canonical too.
            try:
                links_of(event.cid, event.data)
            except IntegrityError as exc:
                raise IntegrityError(f"block {event.cid} in {path}: {exc}") from None
    blocks = 0
    total = 0
    with store.import_session():
        batch: list[Block] = []
        batch_bytes = 0
        for event in read_car_file(path):
            if isinstance(event, CarHeader):
                continue
            batch.append(event)
            batch_bytes += len(event.data)
            blocks += 1
            total += len(event.data)
            if batch_bytes >= _BATCH_BYTES:
                store.put_many(batch, verify=True)
                batch, batch_bytes = [], 0
        if batch:
            store.put_many(batch, verify=True)
        pinned: list[CID] = []
        incomplete: list[CID] = []
        if pin_roots:
            for root in roots:
                try:
                    store.pin_add(root, recursive=True, links_of=links_of)
                except NotFoundError:
                    incomplete.append(root)
                else:
                    pinned.append(root)
    return CarImportResult(roots, pinned, incomplete, blocks, total)

