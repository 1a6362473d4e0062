"""The one error hierarchy of fedge.

::

    FedgeError
    ├── ConfigError          a configuration key, type or value is wrong
    ├── DataError            a dataset or file is missing, malformed or inconsistent
    ├── ModelError           a model does not fit the data (output size, architecture)
    ├── ValidationError      an update failed validation (NaN/Inf, shape, norm)
    ├── AggregationError     a round could not be aggregated (too few updates, ...)
    ├── TransportError       talking to clients failed (network, protocol, auth)
    └── ClientError          a client failed; carries client id, round and stage

Every error's message is one line that names the offending key, file or value, so
the CLI can print it as is and exit with code 2.
"""

from __future__ import annotations


class FedgeError(Exception):
    """Base class of every error fedge raises on purpose."""


class ConfigError(FedgeError):
    """A configuration key, type or value is wrong."""


class DataError(FedgeError):
    """A dataset or file is missing, malformed or inconsistent."""


class ModelError(FedgeError):
    """A model does not match the data or cannot be built."""


class ValidationError(FedgeError):
    """An update failed validation (NaN/Inf, wrong shape or dtype, norm too large)."""


class AggregationError(FedgeError):
    """A round could not be aggregated."""


class TransportError(FedgeError):
    """Talking to clients failed."""


class ClientError(FedgeError):
    """A client failed; the message names the client, the round and the stage."""

    def __init__(self, client_id: int | str, round_num: int, stage: str, cause: BaseException):
        self.client_id = client_id
        self.round_num = round_num
        self.stage = stage
        self.cause = cause
        super().__init__(
            f"client {client_id} failed in round {round_num} during {stage}: {type(cause).__name__}: {cause}"
        )
