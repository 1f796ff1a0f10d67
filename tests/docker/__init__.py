"""Docker tier: the images and the cluster of run_all_servers.sh on a real Docker engine."""
