"""What the metrics tests read: the series the servers promise, and plain HTTP GETs."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

# Every metric docs/operations.md promises, by the name Prometheus stores
# (counters with _total, histograms with _bucket/_sum/_count).
SERIES = [
    "paxoskv_is_leader",
    "paxoskv_role",
    "paxoskv_ballot_round",
    "paxoskv_commit_index",
    "paxoskv_applied_index",
    "paxoskv_cluster_version",
    "paxoskv_max_cluster_version",
    "paxoskv_data_format",
    "paxoskv_leader_changes_total",
    "paxoskv_wal_fsync_duration_seconds_bucket",
    "paxoskv_slot_commands_bucket",
    "paxoskv_client_requests_total",
    "paxoskv_client_request_duration_seconds_bucket",
    "paxoskv_peer_messages_total",
    "paxoskv_pending_writes",
    "paxoskv_session_streams",
    "paxoskv_session_unread_reply_bytes",
]
HTTP_SECONDS = 5.0


def http_get(url: str) -> tuple[int, str]:
    """The status and body of a GET; an HTTP error status is an answer too, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_SECONDS) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
