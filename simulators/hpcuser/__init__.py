"""
A simulated CSCS HPC User API (project GIDs) behind OAuth2 client credentials.

In-process::

    port, sim = await start_hpcuser_simulator(reactor, client_id="c", client_secret="s")
    api_url, token_url = simulator_urls(port)
    ...
    await stop_hpcuser_simulator(port, sim)

As a daemon: ``twistd -n hpcuser-sim --listen tcp:8078``.
"""

from simulators.hpcuser.state import PROJECTS_PATH, TOKEN_PATH, HpcUserSimulator, auto_gid
from simulators.hpcuser.web import HpcUserResource, make_site, simulator_urls, start_hpcuser_simulator, stop_hpcuser_simulator

__all__ = [
    "PROJECTS_PATH",
    "TOKEN_PATH",
    "HpcUserSimulator",
    "auto_gid",
    "HpcUserResource",
    "make_site",
    "simulator_urls",
    "start_hpcuser_simulator",
    "stop_hpcuser_simulator",
]
