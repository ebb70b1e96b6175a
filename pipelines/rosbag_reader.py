"""Opening ROS 1 and ROS 2 bags with rosbags and streaming their messages in time order.

A bag is a ROS 1 `.bag` file, a ROS 2 bag folder (metadata.yaml + storage files) or a
ROS 2 storage file alone (`.db3`, `.mcap`). A folder is read through its storage files:
rosbag2 writes the QoS profiles it offered into metadata.yaml, and when those differ
from the storage's own records rosbags reads no message at all from the folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

STORAGE_SUFFIXES = (".db3", ".mcap")
TYPESTORES = {
    "ros1_noetic": Stores.ROS1_NOETIC,
    "ros2_foxy": Stores.ROS2_FOXY,
    "ros2_humble": Stores.ROS2_HUMBLE,
    "ros2_iron": Stores.ROS2_IRON,
    "ros2_jazzy": Stores.ROS2_JAZZY,
}


class BagError(ValueError):
    """A bag that cannot be opened or read; the message names the bag."""


def storage_paths(path: str | Path) -> list[Path]:
    """The files rosbags should open for one bag."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if not files:
            raise BagError(f"{path}: a folder without .db3 or .mcap storage files is not a ROS 2 bag")
        return files
    if path.suffix in (".bag", *STORAGE_SUFFIXES):
        return [path]
    raise BagError(f"{path}: not a bag (expected a .bag file, a ROS 2 bag folder, or a .db3/.mcap file)")


def typestore(distro: str, msg_files: dict[str, str] | None = None):
    """The typestore of a ROS distro, plus custom message types: {type name: .msg path}."""
    if distro not in TYPESTORES:
        raise BagError(f"unknown ROS distro {distro!r}; choose one of {sorted(TYPESTORES)}")
    store = get_typestore(TYPESTORES[distro])
    for name, msg_path in (msg_files or {}).items():
        try:
            store.register(get_types_from_msg(Path(msg_path).read_text(), name))
        except (OSError, ValueError) as exc:
            raise BagError(f"custom message {name} from {msg_path}: {exc}") from None
    return store


@contextmanager
def open_bag(path: str | Path, distro: str = "ros2_humble", msg_files: dict[str, str] | None = None):
    """An open AnyReader over one bag. Types the bag defines itself (ROS 1 message
    definitions, mcap schemas) come from the bag; the distro's typestore fills in."""
    paths = storage_paths(path)
    try:
        with AnyReader(paths, default_typestore=typestore(distro, msg_files)) as reader:
            yield reader
    except AnyReaderError as exc:
        raise BagError(f"{path}: cannot read the bag: {exc}") from None


def messages(
    reader: AnyReader, topics: list[str], bag: str | Path, window: tuple[int, int] | None = None, decode: bool = True
) -> Iterator[tuple[str, int, object]]:
    """(topic, receive time ns, deserialized message) of `topics`, in receive-time order,
    within the receive-time `window` [start, stop) when given. With `decode=False` the
    message is left as its serialized bytes (enough for timing)."""
    connections = [c for c in reader.connections if c.topic in topics]
    if not connections:
        return  # rosbags reads every connection when given none
    start, stop = window or (None, None)
    try:
        for connection, receive_ns, raw in reader.messages(connections=connections, start=start, stop=stop):
            if not decode:
                yield connection.topic, receive_ns, raw
                continue
            try:
                message = reader.deserialize(raw, connection.msgtype)
            except (AnyReaderError, ValueError, KeyError, IndexError) as exc:
                raise BagError(
                    f"{bag}: topic {connection.topic} at {receive_ns} ns: cannot decode {connection.msgtype} "
                    f"(is the ROS distro right?): {exc}"
                ) from None
            yield connection.topic, receive_ns, message
    except (AnyReaderError, EOFError) as exc:
        raise BagError(f"{bag}: reading stopped: {type(exc).__name__}: {exc}") from None
