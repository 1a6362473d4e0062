"""fedge's wire protocol (``fedge.proto``) and its generated code (``scripts/gen_proto.sh``).

The generated module is untyped; ``pb`` is it, typed as ``Any`` for the type checker.
"""

from typing import Any

from fedge.deploy.proto import fedge_pb2 as _generated

pb: Any = _generated

__all__ = ["pb"]
