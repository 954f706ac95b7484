"""The terminals' side: pushes, remote-auth requests and heartbeats, checked and bound."""
