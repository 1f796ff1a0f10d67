"""In-process tier: real servers on an event loop in this process (InProcessCluster), or fakes served over loopback."""
