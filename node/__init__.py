"""The running node (network I/O lives only here). Arrives with the network issue."""
