"""
The RPC layer shared by region and cluster daemons: authenticated AMP,
large arguments, call timeouts, clients and fan-out.
"""
