#!/usr/bin/env sh
# Regenerate fedge's protobuf code (needs grpcio-tools; installs do not).
set -e
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" -m grpc_tools.protoc -I src --python_out=src src/fedge/deploy/proto/fedge.proto
