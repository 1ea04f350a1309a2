from twisted.application.service import ServiceMaker

cloudstack_sim = ServiceMaker(
    "Outpost CloudStack simulator", "simulators.cloudstack.tap", "A simulated CloudStack API (volumes, async jobs) for tests and demos", "cloudstack-sim"
)
