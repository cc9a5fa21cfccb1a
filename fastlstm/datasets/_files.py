"""Finding, downloading and verifying dataset files.

Search order: an explicit path, $FASTLSTM_DATA_DIR, the Keras cache ~/.keras/datasets,
fastlstm's own cache; otherwise download into fastlstm's cache from `origin`. A file is
used only when its sha256 matches.
"""
import hashlib
import io
import os
import pathlib
import pickle
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

import numpy as np

DOWNLOAD_TIMEOUT_S = 15


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "fastlstm"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_file(fname, origin, file_hash, path=None):
    """The verified local path of dataset file `fname`, downloading it if needed."""
    if path is not None:
        p = pathlib.Path(path).expanduser()
        if p.is_dir():
            p = p / fname
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
        _check_hash(p, file_hash)
        return p
    found = find_local(fname, file_hash)
    if found is not None:
        return found
    own = cache_dir() / fname
    _download(origin, own, file_hash)  # replaces a corrupt cached copy
    return own


def find_local(fname, file_hash):
    """The verified copy of `fname` on this machine, or None: $FASTLSTM_DATA_DIR, the Keras
    cache ~/.keras/datasets (a bad copy in either is an error), fastlstm's cache (a bad copy
    there is ignored: it is downloaded again). Never downloads."""
    candidates = []
    if os.environ.get("FASTLSTM_DATA_DIR"):
        candidates.append(pathlib.Path(os.environ["FASTLSTM_DATA_DIR"]).expanduser() / fname)
    candidates.append(pathlib.Path.home() / ".keras" / "datasets" / fname)
    for p in candidates:
        if p.is_file():
            _check_hash(p, file_hash)
            return p
    own = cache_dir() / fname
    if own.is_file() and sha256(own) == file_hash:
        return own
    return None


def _check_hash(p, file_hash):
    got = sha256(p)
    if got != file_hash:
        raise ValueError(f"{p} is corrupt or not the expected file: sha256 {got}, expected "
                         f"{file_hash}. Delete it or point FASTLSTM_DATA_DIR at a good copy.")


def _download(origin, dest, file_hash):
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(origin, timeout=DOWNLOAD_TIMEOUT_S)
            except (urllib.error.URLError, OSError) as e:
                raise OSError(
                    f"{dest.name} is not on this machine and downloading it from {origin} "
                    f"failed ({e}). Put the file in a folder and set FASTLSTM_DATA_DIR to it, "
                    "or pass its path.") from e
            with resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    done += len(block)
                    _progress(dest.name, done, total)
                sys.stderr.write("\n")
        _check_hash(tmp, file_hash)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _progress(name, done, total):
    if total:
        filled = int(30 * done / total)
        sys.stderr.write(f"\rDownloading {name} [{'=' * filled}{' ' * (30 - filled)}] "
                         f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
    else:
        sys.stderr.write(f"\rDownloading {name} {done / 1e6:.1f} MB")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays of Python lists and ints, and nothing else."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a dataset file")


def load_npz(path):
    """The arrays of an .npz archive; object arrays through the restricted unpickler."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                buf = io.BytesIO(archive.read(member))
                try:
                    arr = np.lib.format.read_array(buf, allow_pickle=False)
                except ValueError:
                    buf.seek(0)
                    major, _ = np.lib.format.read_magic(buf)
                    if major == 1:
                        np.lib.format.read_array_header_1_0(buf)
                    else:
                        np.lib.format.read_array_header_2_0(buf)
                    arr = _ArraysOnly(buf).load()
                arrays[member[:-4]] = arr
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path} is not a readable dataset archive: {e}") from e
    return arrays
