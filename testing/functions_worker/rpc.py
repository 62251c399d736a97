"""The Functions RPC messages as one flat module: what azure_functions_runtime calls `protos`.

The runtime never imports protobuf classes itself. Whoever drives it (the host-bundled proxy worker in
Azure, worker.py here) hands it a module in `request.properties["protos"]`, and it builds every response
from it: `protos.WorkerInitResponse(...)`, `protos.TypedData(...)`. This is that module: every message and
top-level enum of function_rpc.proto, the EventStream method and its (de)serialisers.

It runs inside the worker's venv (host.py and worker.py only), where environment.py compiled the
.proto into
`<venv>/functions_rpc/function_rpc_pb2.py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_GENERATED = Path(sys.prefix) / "functions_rpc" / "function_rpc_pb2.py"

SERVICE = "AzureFunctionsRpcMessages.FunctionRpc"
EVENT_STREAM = f"/{SERVICE}/EventStream"


def _load() -> Any:
    if not _GENERATED.exists():
        raise ImportError(f"{_GENERATED} is missing: run in the venv that environment.py builds")
    spec = importlib.util.spec_from_file_location("function_rpc_pb2", _GENERATED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_rpc_pb2"] = module
    spec.loader.exec_module(module)
    return module


_pb2 = _load()
globals().update({name: getattr(_pb2, name) for name in _pb2.DESCRIPTOR.message_types_by_name})
globals().update({name: getattr(_pb2, name) for name in _pb2.DESCRIPTOR.enum_types_by_name})

serialize = _pb2.StreamingMessage.SerializeToString
deserialize = _pb2.StreamingMessage.FromString


def __getattr__(name: str) -> Any:  # for type checkers: every message is looked up dynamically
    return getattr(_pb2, name)
