from twisted.application.service import ServiceMaker

maas_sim = ServiceMaker(
    "Outpost MAAS simulator", "simulators.maas.tap", "A simulated MAAS REST API 2.0 for tests and demos", "maas-sim"
)
