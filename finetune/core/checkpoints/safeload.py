"""Reading a run directory's files without running code from them, and naming the one that is damaged.

Run directories travel (shared disks, archives, a colleague's copy), so nothing in them is trusted:

    check_checkpoint(folder)        before --resume loads a checkpoint: each file Accelerate's load_state reads
                                    must be data only (below), each weights file whole, each JSON record readable
    check_weights(folder, fix)      before a saved model loads (predict, evaluate, export, demo): every
                                    *.safetensors file in it is whole
    check_safetensors(path, fix)    one weights file: its header and its size agree (a disk that filled mid-copy
                                    leaves a file shorter than its header says)

"Data only" is what torch.load(weights_only=True) accepts: tensors, numbers, strings, containers and numpy's
arrays (Accelerate's allow-list for the RNG states), never a callable. Accelerate loads most checkpoint files that
way already, but it unpickles custom_checkpoint_*.pkl (the learning-rate scheduler) with weights_only=False, and a
random_states_*.pkl it cannot read is skipped in silence (the resume is then no longer exact). So every pickled
file is opened here first, the way a weights-only load opens it; one that needs anything more is refused in one
line naming it, before Accelerate reads a byte of it. A file that passes holds only allow-listed objects, so
Accelerate's own load of the same bytes builds nothing else.

Not covered: FSDP's sharded folders (torch.distributed.checkpoint reads their .metadata with plain pickle) and
DeepSpeed's own checkpoint files; those launches load as Accelerate does.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

from finetune.core.errors import UserError

# What accelerate's save_state writes with torch.save (optimizer.bin, scheduler.bin, sampler.bin, dl_state_dict.bin,
# model.bin without safetensors, scaler.pt, random_states_N.pkl, custom_checkpoint_N.pkl): all loaded on resume.
PICKLED = ("*.bin", "*.pkl", "*.pt", "*.pth")


def check_checkpoint(folder: Path) -> None:
    """Refuse (one line naming the file) a checkpoint holding a file whose loading could run code, or a damaged one."""
    folder = Path(folder)
    fix = (
        f"delete {folder} to resume from the checkpoint before it (if any), or pass --overwrite (without "
        f"--resume) to start again"
    )
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{path} is damaged ({_short(err)}): {fix}") from None
    check_weights(folder, fix)
    for path in sorted({p for pattern in PICKLED for p in folder.glob(pattern) if p.is_file()}):
        check_pickle(path, fix)


def check_pickle(path: Path, fix: str) -> None:
    """`path` is a torch.save file that a weights-only load accepts; else a UserError naming it and `fix`."""
    from accelerate.utils import load  # torch.load(weights_only=True) with the numpy types Accelerate allows

    path = Path(path)
    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive; a bare pickle is not something we wrote
        raise UserError(
            f"{path} is not a checkpoint file this toolkit writes (not a torch.save archive: damaged, or a "
            f"plain pickle, which could run code when loaded); nothing was loaded: {fix}"
        )
    try:
        load(path, map_location="cpu", mmap=True)  # mmap: the tensors are not read, only the pickled structure
    except Exception as err:  # (UnpicklingError names what it refused; a damaged archive raises RuntimeError)
        refused = isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err)
        what = "holds more than data (loading it would run code)" if refused else f"is damaged ({_short(err)})"
        raise UserError(f"{path} {what}; nothing was loaded: {fix}") from None


def check_weights(folder: Path, fix: str) -> None:
    """Every *.safetensors file in `folder` is whole (see check_safetensors)."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors(path, fix)


def check_safetensors(path: Path, fix: str) -> None:
    """The file's size is what its header says: 8 bytes of header length, the JSON header, then the tensors' bytes.

    A cut-short copy fails here with a line naming the file and `fix`, instead of SafetensorError's traceback.
    Cheap: only the header is read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_length,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
            header = json.loads(f.read(header_length)) if 8 + header_length <= size else None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path} is damaged (unreadable header: {_short(err)}): {fix}") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is damaged (cut short at {size:,} bytes, inside its header): {fix}")
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2
    ]
    expected = 8 + header_length + max(ends, default=0)
    if size != expected:
        cut = "cut short" if size < expected else "longer than its header says"
        raise UserError(
            f"{path} is damaged ({cut}: {size:,} of {expected:,} bytes; a full disk or an interrupted copy?): {fix}"
        )


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."
