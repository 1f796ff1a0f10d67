"""An outsider that knows everything a member knows but its key, speaking the peer protocol to real servers.

It reads the cluster id, the member ids and each member's incarnation from
the data dirs of a LocalCluster, and the ballot from ``status``; with that it
can address a well-formed message from any member to any other.
"""

from __future__ import annotations

import json

import grpc

from client import KVClient
from paxos.common import limits
from paxos.common.identity import parse_id
from paxos.consensus.messages import Ballot, Message
from paxos.server.codec import PeerCodec
from paxos.server.service import META_FILE
from protos import log_pb2, peer_pb2, peer_pb2_grpc
from tools.localcluster import LocalCluster


class Forger:
    """Speaks the peer protocol to any server, claiming to be any member."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        meta = json.loads((cluster.data_dir(cluster.names[0]) / META_FILE).read_text())
        self.cluster_id = parse_id(meta["cluster_id"])
        self.ids = {name: parse_id(text) for name, text in meta["members"].items()}
        # Each member's data-dir incarnation, as its own messages carry it.
        self.incarnations = {
            parse_id(m["member_id"]): int(m["incarnation"], 16)
            for m in (json.loads((cluster.data_dir(n) / META_FILE).read_text()) for n in cluster.names)
        }

    def envelope(self, msg: Message, to: str) -> peer_pb2.PeerMessage:
        codec = PeerCodec(self.cluster_id, msg.sender, self.ids.values(), self.incarnations.get(msg.sender, 1))
        return codec.encode(msg, self.ids[to])

    def send(self, to: str, *raw: peer_pb2.PeerMessage) -> None:
        options = [("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES)]
        with grpc.insecure_channel(self.cluster.address(to), options=options) as channel:
            peer_pb2_grpc.PeerStub(channel).Stream(iter(raw), timeout=60)


def leader_status(kv: KVClient) -> dict[str, object]:
    """The leader's line of ``status``, or nothing while there is none."""
    leaders = [n for n in kv.status() if n["role"] == "leader"]
    return dict(leaders[0]) if leaders else {}


def parse_ballot(text: object) -> Ballot:
    """A ballot as ``status`` shows it: round, a dot, the node id in hex."""
    round_text, node_text = str(text).split(".")
    return Ballot(int(round_text), int(node_text, 16))


def forged_command(key: str, value: str) -> bytes:
    """A set as a log holds it, one that changes the state if it is ever applied: in the form of logs from
    before sessions were registered, it opens its own session."""
    write = log_pb2.ClientWrite(client_id="forger", seq=1, first_unacked=1, set=log_pb2.SetOp(key=key, value=value))
    return log_pb2.LogCommand(client_write=write).SerializeToString()


def refusals_logged(cluster: LocalCluster, name: str, reason: str) -> bool:
    """Whether a server's log holds a refusal for ``reason``."""
    text = cluster.log_path(name).read_text(errors="replace")
    return "refused" in text and reason in text
