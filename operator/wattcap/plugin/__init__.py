"""`kubectl wattcap`: the platform team's view of the site, from what the operator publishes."""
