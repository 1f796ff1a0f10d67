"""Docker tier: the images and the clusters of run_all_servers.sh on a real Docker engine.

The images are built by ``./remove_and_build.sh`` (cached after the first
time; on a fresh machine that means building the debootstrap base image and
installing the dependencies, a few minutes), once for both modules.
test_cluster.py starts a cluster with ``./run_all_servers.sh`` under names
of its own -- servers pxt0..pxt4 on the network paxos_test_net with volumes
paxos_data_pxt0.. -- so a real deployment (container0.., paxos_network) is
never touched.  test_scaling.py changes the members of running clusters:
each test starts and removes one of its own (pxs0.. on
paxos_test_scale_net; the scripts' output and the servers' logs in
.../docker-pxs0/TEST_NAME/).  The two modules run side by side on two workers.
Clients are one-shot ``paxos_client`` containers, labelled by cluster.
Everything a module creates is removed afterwards, also when a test fails
(the servers' logs are kept first, in the module's temp directory:
.../docker-pxt0/logs/); leftovers of an interrupted run are removed before
starting.  The build's output is in .../docker-*/build.log.

A server cut off the network is reached through its own network namespace
(``--network container:NAME`` and a hostfile listing only 127.0.0.1:50051), so
a query there tests that server and nothing else.

These tests run whenever ``docker info`` works; they are skipped, with the
reason shown, only when there is no Docker engine.  Runs of a module on one
machine take turns (a lock file a module in the temp directory), since they
share the names.
"""
