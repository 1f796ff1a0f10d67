"""Unit tier: pure tests, no server (in this process or another), no subprocess, no Docker; the fast tier."""
