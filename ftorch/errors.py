"""One exception hierarchy: every error an operator sees says what failed and what to do."""
from __future__ import annotations


class FtorchError(Exception):
    """Base of every ftorch error; str() is a one-line message an operator can act on."""

    exit_code = 1


class ConfigError(FtorchError):
    """The pair's YAML config is missing, malformed, or has a wrong field."""

    exit_code = 2


class VersionError(FtorchError):
    """A component (QEMU, libvirt) is a version ftorch has not been tested with."""

    exit_code = 3


class LogFormatError(FtorchError):
    """The replay log (file or stream) is corrupt, truncated or of an unknown version."""


class FrameError(FtorchError):
    """A logging-channel frame is malformed or fails its checksum."""


class ChannelError(FtorchError):
    """The logging channel between the agents failed."""


class VirtError(FtorchError):
    """libvirt or QEMU refused an operation."""


class LabError(FtorchError):
    """The one-machine lab (namespaces, bridge, daemons) could not be set up or torn down."""


class AgentUnreachable(FtorchError):
    """An agent did not answer on its control socket."""

    exit_code = 4
