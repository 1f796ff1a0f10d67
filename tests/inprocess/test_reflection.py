"""gRPC reflection lists and describes every service; health reports per service and turns NOT_SERVING on shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from paxos.server.service import KV_SERVICE, PEER_SERVICE
from tests.harness.inprocess import in_process_cluster

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RPC_SECONDS = 10.0


def test_reflection_lists_the_services_and_a_generic_client_can_call_one(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 1) as cluster:
        address = cluster.members[0].address
        with grpc.insecure_channel(address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            assert {KV_SERVICE, PEER_SERVICE, "grpc.health.v1.Health"} <= services, services
            # What grpcurl does: build the request and reply types from the
            # descriptors the server sends, with no generated code.
            pool = descriptor_pool.DescriptorPool(database)
            method = pool.FindServiceByName(KV_SERVICE).FindMethodByName("Status")
            request_type = message_factory.GetMessageClass(method.input_type)
            reply_type = message_factory.GetMessageClass(method.output_type)
            call = channel.unary_unary(
                f"/{KV_SERVICE}/Status",
                request_serializer=request_type.SerializeToString,
                response_deserializer=reply_type.FromString,
            )
            reply = call(request_type(), timeout=RPC_SECONDS)
            assert reply.name == "s0"


def test_health_reports_each_service_and_turns_not_serving_on_shutdown(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 1) as cluster:
        address = cluster.members[0].address
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", KV_SERVICE, PEER_SERVICE):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_SECONDS)
                assert reply.status == SERVING, service
            watch = health.Watch(health_pb2.HealthCheckRequest(service=KV_SERVICE), timeout=RPC_SECONDS)
            assert next(watch).status == SERVING
            # Stop without waiting: the watcher must hear NOT_SERVING while
            # the server drains, before its connection goes away.
            stopping = asyncio.run_coroutine_threadsafe(cluster.servers["s0"].stop(), cluster.loop)
            assert next(watch).status == NOT_SERVING
            stopping.result(RPC_SECONDS)
            cluster.stopped.add("s0")
