"""Processes tier: real server processes (LocalCluster) and the commands run as subprocesses."""
