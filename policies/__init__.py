"""Built-in policies. Each registers under the `gateway.policies` entry-point group."""
