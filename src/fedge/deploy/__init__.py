"""Real deployment over gRPC: ``fedge serve`` runs the round loop for remote nodes.

The server is the same :func:`fedge.engine.run` with a
:class:`~fedge.deploy.transport.GrpcTransport`; a node (``fedge join``) runs the same
:func:`fedge.clients.base.run_fit` as a simulated client. See ``docs/deployment.md``.

Importing this package registers the ``[deploy]`` config section only: gRPC and
``cryptography`` are imported by the modules that need them.
"""

from fedge.deploy.config import DeployConfig

__all__ = ["DeployConfig"]
