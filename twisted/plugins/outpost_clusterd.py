from twisted.application.service import ServiceMaker

clusterd = ServiceMaker(
    "Outpost cluster", "clusterd.tap", "Outpost cluster daemon: connects to every region, does the site's work", "clusterd"
)
