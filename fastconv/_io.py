"""Atomic file writes, shared by checkpoints (nn.Sequential.save) and datasets (IDX, downloads)."""
import contextlib
import os
import secrets


@contextlib.contextmanager
def atomic_file(path):
    """Yield a binary file beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name is unique (several processes may write the same file) and hidden. On
    success the data are fsynced before the rename and the directory after it; on any error,
    KeyboardInterrupt included, the temporary file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.part")
    # os.open with mode 0o666 applies the umask, unlike tempfile.mkstemp's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory):
    # Makes the rename itself durable; not possible on Windows, where it is skipped.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
