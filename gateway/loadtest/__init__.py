"""`gateway loadtest`: Locust users generated from a config, and a verdict per route."""
