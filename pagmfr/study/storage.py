"""Small files in a study's storage (``best_config.json``): a local folder, or a URI such as
``s3://bucket/runs`` written through pyarrow's filesystems, as Ray Tune writes its own."""

from __future__ import annotations

from pathlib import Path

from pagmfr.files import write_text_atomically


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``s3://``, ``gs://``, ``file://``), not a local path."""
    return "://" in location


def join(location: str, *parts: str) -> str:
    """``location`` / ``parts``, for a local path or a URI alike."""
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


def write_text(location: str, text: str) -> str:
    """Write ``text`` to a local path (atomically) or a URI; returns ``location``."""
    if not is_uri(location):
        write_text_atomically(location, text)
        return location
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())
    return location


def read_text(location: str) -> str:
    """The text at a local path or a URI; ``FileNotFoundError`` naming it when absent."""
    if not is_uri(location):
        return Path(location).read_text()
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(location)
    if filesystem.get_file_info(path).type != fs.FileType.File:
        raise FileNotFoundError(f"no file at {location}")
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()
