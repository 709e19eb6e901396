"""The config file: its typed shape, reading it with line numbers, validating it, its schema."""
