"""Infrastructure on the cluster: drivers by location type, task monitoring and the journal."""
