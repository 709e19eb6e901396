"""The client-facing HTTP/1.1 server: reading requests, the messages a chain passes, answering."""
