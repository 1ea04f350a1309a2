from twisted.application.service import ServiceMaker

regiond = ServiceMaker(
    "Outpost region", "regiond.tap", "Outpost region daemon: state, HTTP APIs, RPC to clusters", "regiond"
)
