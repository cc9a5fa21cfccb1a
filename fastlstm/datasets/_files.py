"""Finding, downloading and verifying dataset files.

Search order: an explicit path, $FASTLSTM_DATA_DIR, the Keras cache ($KERAS_HOME or
~/.keras, then datasets/), fastlstm's own cache; otherwise download into fastlstm's cache
from `origin`. A file is used only when its hash matches: sha256, or md5 for a 32-digit hash
(Keras's rule; Keras publishes only an md5 for some word-index files).
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
KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"  # Keras's origin


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "fastlstm"


def keras_cache_dir():
    """Where Keras's `get_file` keeps datasets: $KERAS_HOME/datasets or ~/.keras/datasets."""
    base = os.environ.get("KERAS_HOME") or pathlib.Path.home() / ".keras"
    return pathlib.Path(base).expanduser() / "datasets"


def file_digest(path, algorithm="sha256"):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path):
    return file_digest(path, "sha256")


def _algorithm(file_hash):
    return "md5" if len(file_hash) == 32 else "sha256"


def find_file(path, fname, origin, file_hash):
    """The verified local path of a dataset file, downloading it if needed.

    `path` as Keras's: a file name (default `fname`) looked up in the data folders and
    downloaded under that name. fastlstm also takes a path with a folder part (or an
    existing folder): that file, or `fname` inside the folder, which must exist.
    """
    name = fname if path is None else os.fspath(path)
    p = pathlib.Path(name).expanduser()
    explicit = p.is_dir() or os.sep in name or (os.altsep and os.altsep in name)
    if explicit:
        if p.is_dir():
            p = p / fname
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
        _check_hash(p, file_hash)
        return p
    found = find_local(name, file_hash)
    if found is not None:
        return found
    own = cache_dir() / name
    _download(origin, own, file_hash)  # replaces a corrupt cached copy
    return own


def find_local(fname, file_hash):
    """The verified copy of `fname` on this machine, or None: $FASTLSTM_DATA_DIR, the Keras
    cache (a bad copy in either is an error), fastlstm's cache (a bad copy there is
    ignored: it is downloaded again). Never downloads."""
    candidates = []
    if os.environ.get("FASTLSTM_DATA_DIR"):
        candidates.append(pathlib.Path(os.environ["FASTLSTM_DATA_DIR"]).expanduser() / fname)
    candidates.append(keras_cache_dir() / fname)
    for p in candidates:
        if p.is_file():
            _check_hash(p, file_hash)
            return p
    own = cache_dir() / fname
    if own.is_file() and file_digest(own, _algorithm(file_hash)) == file_hash:
        return own
    return None


def _check_hash(p, file_hash):
    algorithm = _algorithm(file_hash)
    got = file_digest(p, algorithm)
    if got != file_hash:
        raise ValueError(f"{p} is corrupt or not the expected file: {algorithm} {got}, expected "
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
