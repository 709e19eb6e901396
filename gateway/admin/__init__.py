"""The admin listener: health, readiness, metrics, routes, reload, policies' admin calls."""
