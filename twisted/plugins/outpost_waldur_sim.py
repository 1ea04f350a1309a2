from twisted.application.service import ServiceMaker

waldur_sim = ServiceMaker(
    "Outpost Waldur simulator", "simulators.waldur.tap", "A simulated Waldur marketplace (storage resources, offering customers)", "waldur-sim"
)
hpcuser_sim = ServiceMaker(
    "Outpost HPC User API simulator", "simulators.hpcuser.tap", "A simulated CSCS HPC User API (project GIDs) behind OAuth2", "hpcuser-sim"
)
