"""The operator's tools that run beside a cluster, not in it.

``localcluster`` starts a whole cluster on this machine as subprocesses,
``local`` is the launcher command around it (``python -m paxos.local``) and
``bench`` the closed-loop load generator (``python -m paxos.bench``).  They
use the client library, ``paxos.common`` and the certificate maker
(``paxos.certs``), never the server's code, and no server needs them: the
server image runs without this package.
"""
