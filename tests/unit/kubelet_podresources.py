"""A stand-in kubelet for the node agent's tests: a real gRPC server on a unix socket.

It serves v1.PodResourcesLister/List as the kubelet does at
/var/lib/kubelet/pod-resources/kubelet.sock. Its answer is encoded here by hand from the
field numbers of k8s.io/kubelet/pkg/apis/podresources/v1/api.proto, not with the agent's
own message classes, so a wrong field number in the agent cannot agree with itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def devices(resource: str, *ids: str) -> bytes:  # ContainerDevices
    return field(1, resource) + b"".join(field(2, i) for i in ids)


def container(name: str, *devs: bytes) -> bytes:  # ContainerResources
    return field(1, name) + b"".join(field(2, d) for d in devs) + bytes([0x18, 0x07])  # cpu_ids


def pod(namespace: str, name: str, *containers: bytes) -> bytes:  # PodResources
    return field(1, name) + field(2, namespace) + b"".join(field(3, c) for c in containers)


def response(*pods: bytes) -> bytes:  # ListPodResourcesResponse
    return b"".join(field(1, p) for p in pods)


class Kubelet:
    """A stand-in kubelet: a real gRPC server answering List with `answer` (raw bytes)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.answer = response()
        self.requests: list[bytes] = []
        handler = grpc.method_handlers_generic_handler(
            "v1.PodResourcesLister",
            {
                "List": grpc.unary_unary_rpc_method_handler(
                    self._list, request_deserializer=None, response_serializer=None
                )
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix://{socket}")

    def _list(self, request: bytes, _context: grpc.ServicerContext) -> bytes:
        self.requests.append(request)
        return self.answer


@contextlib.contextmanager
def running_kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    """A Kubelet serving on tmp_path/kubelet.sock until the block ends."""
    k = Kubelet(tmp_path / "kubelet.sock")
    k.server.start()
    yield k
    k.server.stop(None)
