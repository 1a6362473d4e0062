"""Real deployment over gRPC: ``fedge serve`` runs the round loop for remote nodes.

The server is the same :func:`fedge.engine.run` with a
:class:`~fedge.deploy.transport.GrpcTransport`; a node (``fedge join``) runs the same
:func:`fedge.clients.base.run_fit` as a simulated client. See ``docs/deployment.md``.

Its :data:`HOOKS` give :mod:`fedge.plugins` the ``[deploy]`` config section only: gRPC
and ``cryptography`` are imported by the modules that need them.
"""

from fedge.deploy.config import DeployConfig
from fedge.plugins import Hooks

HOOKS = Hooks(sections={"deploy": DeployConfig})

__all__ = ["HOOKS", "DeployConfig"]
